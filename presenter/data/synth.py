"""`presenter data synth`: the synthetic talking-head corpus with exact phone timing.

Per clip (deterministic for (seed, clip index)): pick a split, then a voice, rate and pitch
(held-out voices for val/test), one or two sentences, a speaking style, and an identity
(held-out identities for test); synthesise speech with espeak-ng (phone events = exact
timing), pad with silence, augment the audio as microphones and WebRTC deliver it (timing
unchanged), turn phones into mouth parameters (presenter.motion.visemes) shaped by the style,
and render the portrait talking (presenter.data.render). Worker processes render clips in
parallel; finished clips are skipped on a rerun.

Styles are how a person moves, not what they say: jaw amplitude, lip spread bias, rounding
amplitude and articulation (how much the mouth undershoots fast phones). A style id fixes
them, so two clips of one style teach the style encoder what "the same style" is.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from presenter.data.corpus import FPS, SAMPLE_RATE, Clip, has_clip, write_clip, write_index

log = logging.getLogger(__name__)

SPLIT_SHARES = {"train": 0.86, "val": 0.07, "test": 0.07}


@dataclass(frozen=True)
class SynthConfig:
    clips: int = 200
    seed: int = 0
    workers: int = 2
    n_styles: int = 24
    max_sentences: int = 2
    silence_s: tuple[float, float] = (0.2, 0.8)   # before and after the speech
    augment_audio: float = 0.8                     # share of train clips with audio augmentation
    identities_dir: str | None = None              # `presenter data identities` output; None = shipped portraits only


@dataclass(frozen=True)
class Style:
    jaw_gain: float
    spread_bias: float
    round_gain: float
    articulation_frames: float    # Gaussian smoothing of jaw/spread/round: larger = lazier speaker

    @classmethod
    def from_id(cls, style_id: int) -> "Style":
        r = np.random.default_rng([7919, style_id])
        return cls(float(r.uniform(0.6, 1.4)), float(r.uniform(-0.25, 0.25)), float(r.uniform(0.6, 1.3)),
                   float(r.uniform(0.0, 1.6)))

    def apply(self, params: np.ndarray) -> np.ndarray:
        """Mouth params (T, P) spoken in this style; closure is kept exact (bilabials still seal)."""
        from presenter.motion.mouth import JAW, PARAM_HIGH, PARAM_LOW, ROUND, SPREAD

        p = params.copy()
        p[:, JAW] *= self.jaw_gain
        p[:, ROUND] *= self.round_gain
        p[:, SPREAD] += self.spread_bias * (p[:, JAW] > 0.05)
        if self.articulation_frames > 0:
            for k in (JAW, SPREAD, ROUND):
                p[:, k] = gaussian_filter1d(p[:, k], self.articulation_frames, mode="nearest")
        return np.clip(p, PARAM_LOW, PARAM_HIGH)


def _identities(cfg: SynthConfig) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Identity images by split: 'train' for train/val clips, 'test' for test clips."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    out = {"train": [("astronaut", data.astronaut())], "test": [("hopper", hopper)]}
    if cfg.identities_dir:
        from presenter.data.identities import load_identity_images

        for split, items in load_identity_images(Path(cfg.identities_dir)).items():
            out["test" if split == "test" else "train"].extend(items)
    return out


_WORKER: dict = {}


def _init_worker(cfg: SynthConfig) -> None:
    from presenter.face.landmarker import FaceLandmarker

    _WORKER["cfg"] = cfg
    _WORKER["ids"] = _identities(cfg)
    _WORKER["lm"] = FaceLandmarker("image", max_faces=1)


def _texts() -> list[str]:
    from presenter.data.sentences import generated, sentences

    return list(sentences()) + generated(400, seed=1)


def make_clip(index: int, cfg: SynthConfig, landmarker, identities: dict) -> Clip:
    """Clip number `index` of the corpus for cfg.seed (the same inputs give the same clip)."""
    from presenter.data.augment import augment
    from presenter.data.render import augment_image, prepare_still, render_clip
    from presenter.data.tts import synthesize, voices
    from presenter.motion.visemes import phones_to_params

    rng = np.random.default_rng([cfg.seed, index])
    split = str(rng.choice(list(SPLIT_SHARES), p=list(SPLIT_SHARES.values())))
    pool = voices(holdout=split != "train")
    voice = pool[int(rng.integers(len(pool)))]
    texts = _texts()
    text = " ".join(texts[int(rng.integers(len(texts)))] for _ in range(int(rng.integers(1, cfg.max_sentences + 1))))
    utt = synthesize(text, voice=voice, rate_wpm=int(rng.integers(130, 230)), pitch=int(rng.integers(25, 75)))
    lead, tail = (float(rng.uniform(*cfg.silence_s)) for _ in range(2))
    n_lead = int(round(lead * SAMPLE_RATE))
    total = n_lead + len(utt.audio) + int(round(tail * SAMPLE_RATE))
    n_frames = -(-total // (SAMPLE_RATE // FPS))
    audio = np.zeros(n_frames * SAMPLE_RATE // FPS, np.float32)
    audio[n_lead:n_lead + len(utt.audio)] = utt.audio
    phones = [("sil", 0.0, lead)] + [(p, a + lead, b + lead) for p, a, b in utt.phones]
    end = phones[-1][2]
    phones.append(("sil", end, len(audio) / SAMPLE_RATE))
    steps: dict = {}
    if split == "train" and rng.random() < cfg.augment_audio:
        audio, steps = augment(audio, seed=int(rng.integers(2**31)))
    style_id = int(rng.integers(cfg.n_styles))
    params = Style.from_id(style_id).apply(phones_to_params(phones, n_frames, fps=FPS))
    faces = identities["test" if split == "test" else "train"]
    for _ in range(20):
        name, image = faces[int(rng.integers(len(faces)))]
        still = prepare_still(augment_image(image, rng), landmarker)
        if still is not None:
            break
    else:
        raise RuntimeError(f"clip {index}: no usable face after 20 augmentations")
    frames, face = render_clip(still, params, rng)
    meta = {"split": split, "source": "synth", "identity": name, "voice": voice.name,
            "rate_wpm": utt.rate_wpm, "pitch": utt.pitch, "style": f"style-{style_id:03d}", "text": text,
            "audio_augmentation": steps, "phones": [[p, round(a, 5), round(b, 5)] for p, a, b in phones]}
    return Clip(f"synth-{cfg.seed}-{index:06d}", meta, audio, face, frames)


def _work(index: int) -> str:
    cfg = _WORKER["cfg"]
    clip = make_clip(index, cfg, _WORKER["lm"], _WORKER["ids"])
    write_clip(Path(_WORKER["root"]), clip)
    return clip.id


def _init_with_root(cfg: SynthConfig, root: str) -> None:
    _init_worker(cfg)
    _WORKER["root"] = root


def synth(root: Path, cfg: SynthConfig = SynthConfig()) -> dict:
    """Make (or complete) the corpus at root; returns the index."""
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(cfg.clips) if not has_clip(root, f"synth-{cfg.seed}-{i:06d}")]
    log.info("synth: %d of %d clips to make in %s", len(todo), cfg.clips, root)
    bar = tqdm(total=cfg.clips, initial=cfg.clips - len(todo), desc="synth clips", disable=not sys.stderr.isatty())
    if todo:
        if cfg.workers <= 1:
            _init_with_root(cfg, str(root))
            for i in todo:
                _work(i)
                bar.update(1)
        else:
            ctx = mp.get_context("spawn")
            with ctx.Pool(cfg.workers, initializer=_init_with_root, initargs=(cfg, str(root))) as pool:
                for _ in pool.imap_unordered(_work, todo):
                    bar.update(1)
    bar.close()
    return write_index(root, {"synth": asdict(cfg)})
