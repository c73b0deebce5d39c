"""Lip-sync metrics for speech -> mouth drivers, on held-out synthetic clips and on real speech.

What each number can and cannot show:
- Held-out synthetic (voice and identity never trained on): lip-vertex error against the exact
  mesh that the phones commanded; opening correlation; audio-visual offset (the lag, in frames,
  that best aligns predicted and true opening). It shows the model learnt the corpus's mapping;
  it cannot show that the mapping looks like a real person speaking.
- Real read speech (pocketsphinx-testdata, forced-aligned phones): correlation of the predicted
  lip opening with the phonetic reference track (the viseme model driven by the aligned phones),
  the share of p/b/m on which the lips close, and the offset. It shows timing and phonetics on
  real voices; the reference track is itself a model of articulation, not a measured mouth.
The loudness baseline is scored on the same inputs with the same code.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from presenter.data.corpus import FPS
from presenter.face.canonical import LIPS_INNER, LIPS_OUTER, LOWER_INNER_LIP, UPPER_INNER_LIP, canonical_mesh
from presenter.motion.mouth import REST_GAP_CM, closed_rest, deform
from presenter.train.syncformer_data import BILABIALS

MAX_LAG = 6


def opening_cm(disp: np.ndarray) -> np.ndarray:
    """Inner-lip opening (T,) of a closed-rest face moved by displacements (T, V, 3), cm, >= 0."""
    return np.maximum(REST_GAP_CM + disp[:, UPPER_INNER_LIP, 1] - disp[:, LOWER_INNER_LIP, 1], 0.0)


def params_to_disp(params: np.ndarray) -> np.ndarray:
    """Mouth params (T, P) -> displacements (T, V, 3) on the canonical face with a sealed rest."""
    rest = closed_rest(canonical_mesh().vertices.astype(np.float32))
    return np.stack([deform(rest, p) - rest for p in params])


def best_lag(pred: np.ndarray, ref: np.ndarray, max_lag: int = MAX_LAG) -> int:
    """Lag (frames) maximising the correlation of pred shifted against ref; > 0 = pred is late."""
    scores = []
    for k in range(-max_lag, max_lag + 1):
        a, b = (pred[k:], ref[:len(ref) - k]) if k >= 0 else (pred[:k], ref[-k:])
        scores.append(np.corrcoef(a, b)[0, 1] if len(a) > 2 and a.std() > 0 and b.std() > 0 else -1.0)
    return int(np.argmax(scores)) - max_lag


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0


def bilabial_closure(opening: np.ndarray, phones: list, *, rel: float = 0.15, abs_cm: float = 0.1) -> tuple[int, int]:
    """(closed, total) over p/b/m: closed when the smallest opening in the phone's frames is at most
    max(abs_cm, rel * the 95th-percentile opening of the utterance)."""
    thr = max(abs_cm, rel * float(np.percentile(opening, 95)))
    closed = total = 0
    times = np.arange(len(opening)) / FPS
    for ph, a, b in phones:
        if ph not in BILABIALS:
            continue
        idx = np.flatnonzero((times >= a - 0.5 / FPS) & (times <= b + 0.5 / FPS))
        if not len(idx):
            continue
        total += 1
        closed += int(opening[idx].min() <= thr)
    return closed, total


def reference_opening(phones: list, n_frames: int) -> np.ndarray:
    """The phonetic reference track (T,): the viseme model's lip opening for the aligned phones."""
    from presenter.motion.visemes import phones_to_params

    return opening_cm(params_to_disp(phones_to_params(phones, n_frames, fps=FPS)))


@dataclass
class RealScores:
    correlation: float
    offset_frames: int
    bilabials_closed: int
    bilabials: int

    @property
    def closure_rate(self) -> float:
        return self.bilabials_closed / max(1, self.bilabials)


def run_driver(driver, audio: np.ndarray, n_frames: int) -> np.ndarray:
    """Feed a MouthDriver a whole clip in 40 ms chunks; displacements (T, V, 3) (params are converted)."""
    driver.reset()
    outs = [driver.push(audio[i:i + 640]) for i in range(0, len(audio), 640)] + [driver.flush()]
    poses = np.concatenate([o for o in outs if len(o)])[:n_frames]
    if poses.ndim == 2:
        poses = params_to_disp(poses)
    if len(poses) < n_frames:
        poses = np.concatenate([poses, np.zeros((n_frames - len(poses),) + poses.shape[1:], np.float32)])
    return poses


def score_real(driver, clips) -> RealScores:
    """Scores over the real validation utterances (concatenated tracks for correlation and offset)."""
    preds, refs, closed, total = [], [], 0, 0
    for clip in clips:
        n = -(-len(clip.audio) // 640)
        op = opening_cm(run_driver(driver, clip.audio, n))
        preds.append(op)
        refs.append(reference_opening(clip.phones, n))
        c, t = bilabial_closure(op, clip.phones)
        closed, total = closed + c, total + t
    p, r = np.concatenate(preds), np.concatenate(refs)
    return RealScores(_corr(p, r), best_lag(p, r), closed, total)


@dataclass
class SynthScores:
    lip_error_mm: float
    correlation: float
    offset_frames: int
    bilabial_closure_rate: float


def score_synthetic(driver, clips) -> SynthScores:
    """Scores on corpus clips (presenter.data.corpus.Clip) against their exact meshes."""
    lips = list(dict.fromkeys(LIPS_OUTER + LIPS_INNER))
    errs, preds, trues, closed, total = [], [], [], 0, 0
    for clip in clips:
        n = clip.n_frames
        true = clip.face["canon"] - clip.face["neutral"]
        pred = run_driver(driver, clip.audio, n)
        errs.append(np.linalg.norm(pred[:, lips] - true[:, lips], axis=-1).mean() * 10)
        preds.append(opening_cm(pred))
        trues.append(opening_cm(true))
        c, t = bilabial_closure(preds[-1], clip.meta.get("phones") or [])
        closed, total = closed + c, total + t
    p, t = np.concatenate(preds), np.concatenate(trues)
    return SynthScores(float(np.mean(errs)), _corr(p, t), best_lag(p, t), closed / max(1, total))


def style_effect(driver, clip, references: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Opening amplitude (std, cm) and rhythm (mean |d opening / dt|, cm/s) of one clip spoken with
    each reference style."""
    out = {}
    for name, ref in references.items():
        driver.set_style(ref)
        op = opening_cm(run_driver(driver, clip.audio, clip.n_frames))
        out[name] = {"amplitude_cm": float(op.std()), "mean_speed_cm_s": float(np.abs(np.diff(op)).mean() * FPS),
                     "max_cm": float(op.max())}
    driver.set_style(None)
    return out


def step_cost_ms(driver, *, steps: int = 100) -> tuple[float, float]:
    """(median, p90) ms of one 40 ms push of speech-like audio, front-end included."""
    rng = np.random.default_rng(0)
    driver.reset()
    ms = []
    for i in range(steps + 10):
        chunk = (0.1 * rng.standard_normal(640) * (1 + np.sin(i))).astype(np.float32)
        t = time.perf_counter()
        driver.push(chunk)
        if i >= 10:
            ms.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ms)), float(np.percentile(ms, 90))




def evaluate_lipsync(model_dir, corpus, *, max_clips: int = 40) -> dict:
    """All metrics for a trained model folder on a corpus's test split and on real speech, with the
    loudness baseline scored on the same real inputs. Returns a JSON-ready dict."""
    from pathlib import Path

    from presenter.data.align_real import real_validation_set
    from presenter.data.corpus import load_clip, read_index
    from presenter.data.synth import Style
    from presenter.models.lipsync import load_lipsync
    from presenter.motion.loudness import LoudnessDriver
    from presenter.motion.syncformer_driver import SyncFormerDriver
    from presenter.train.syncformer_data import mouth_region

    corpus = Path(corpus)
    model = load_lipsync(model_dir)
    driver = SyncFormerDriver(model)
    index = read_index(corpus)
    test = [c["id"] for c in index["clips"] if c["split"] == "test"][:max_clips]
    clips = [load_clip(corpus, cid, crops=False) for cid in test]
    real = real_validation_set()
    out: dict = {"test_clips": len(clips), "test_seconds": sum(c.n_frames for c in clips) / FPS,
                 "real_clips": len(real), "real_seconds": sum(len(c.audio) for c in real) / 16000}
    # Synthetic clips: the model against its own labels (no lead); real speech: as shipped.
    out["synthetic"] = vars(score_synthetic(SyncFormerDriver(model, lead_frames=0), clips))
    out["real"] = {name: {**vars(s), "closure_rate": s.closure_rate}
                   for name, s in (("syncformer", score_real(driver, real)), ("loudness_baseline", score_real(LoudnessDriver(), real)))}
    # Style: one test clip spoken in the least and the most expressive training style.
    styles = sorted({c.get("style") for c in (load_clip(corpus, e["id"], crops=False).meta for e in index["clips"][:200])
                     if c.get("style")})
    gains = {s: Style.from_id(int(s.split("-")[1])).jaw_gain for s in styles}
    lo, hi = min(gains, key=gains.get), max(gains, key=gains.get)
    refs = {}
    region = mouth_region()
    for name in (lo, hi):
        cid = next(e["id"] for e in index["clips"] if e["split"] == "train"
                   and load_clip(corpus, e["id"], crops=False).meta.get("style") == name)
        c = load_clip(corpus, cid, crops=False)
        d = np.zeros_like(c.face["canon"])
        d[:, region] = (c.face["canon"] - c.face["neutral"])[:, region]
        refs[f"{name} (jaw gain {gains[name]:.2f})"] = d
    out["style"] = style_effect(driver, clips[0], refs)
    out["step_ms"] = dict(zip(("median", "p90"), step_cost_ms(driver)))
    return out
