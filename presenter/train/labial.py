"""Data and training for the bilabial-closure probe (`presenter.motion.labial`).

Data: synthetic speech with exact phone timing only (espeak-ng through `presenter.data.tts`,
the training voices; held-out espeak voices for validation), silence padded before and after,
most clips through `presenter.data.augment` (room, noise, band, level, Opus). Features are the
SyncFormer's own: `features_for_clip(audio, FeatureConfig(), encode=whisper_encode(1))`,
(T, 768) per 40 ms video frame with 80 ms look-ahead. The real read speech of
`presenter.data.align_real` is never used here.

Labels per video frame t (span [t * 0.04, (t + 1) * 0.04) s), from the phones covering it:
  2 = bilabial (p/b/m cover at least half the frame: for p and b the segment is mostly the
      closure, the lips are shut through it and open at the burst at its end),
  0 = silence (sil covers at least half the frame), 1 = other speech.
Each shard also keeps `shares`, the fraction of each frame that p/b/m cover (a soft target; unused).

    python -m presenter.train.labial data --out DIR --clips N --seed S [--holdout]
    python -m presenter.train.labial train --data DIR... --val DIR --out presenter/models/weights/labial
"""
from __future__ import annotations

import argparse
import logging
import json
import time
from pathlib import Path

import numpy as np

from presenter.errors import UserError
from presenter.motion.labial import BILABIAL, SILENCE, SPEECH

log = logging.getLogger(__name__)

HOP_S = 0.04
BILABIAL_PHONES = ("p", "b", "m")


def frame_labels(phones: list[tuple[str, float, float]], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Phones [(phone, start_s, end_s)] -> labels (T,) int64 in {0 sil, 1 speech, 2 bilabial} and
    p/b/m share of each frame (T,) float32."""
    share = np.zeros((3, n_frames), np.float32)
    for phone, a, b in phones:
        k = SILENCE if phone == "sil" else BILABIAL if phone in BILABIAL_PHONES else SPEECH
        f0, f1 = int(np.floor(a / HOP_S)), int(np.ceil(b / HOP_S))
        for t in range(max(f0, 0), min(f1, n_frames)):
            ov = min(b, (t + 1) * HOP_S) - max(a, t * HOP_S)
            if ov > 0:
                share[k, t] += ov / HOP_S
    labels = np.where(share[BILABIAL] >= 0.5, BILABIAL, np.where(share[SILENCE] >= 0.5, SILENCE, SPEECH))
    return labels.astype(np.int64), share[BILABIAL]


SHARD_CLIPS = 25           # clips per data shard (a rerun skips finished shards)


def _pad_and_augment(speech: np.ndarray, phones: list, rng: np.random.Generator,
                     p_augment: float) -> tuple[np.ndarray, list, dict]:
    """0.1-0.6 s of silence before and after (labelled sil), then `presenter.data.augment` with
    probability p_augment, else a random level -> (audio, phones, augmentation steps)."""
    from presenter.data.augment import augment

    lead, tail = rng.uniform(0.1, 0.6, size=2)
    n_lead = int(lead * 16000)
    audio = np.zeros(n_lead + len(speech) + int(tail * 16000), np.float32)
    audio[n_lead:n_lead + len(speech)] = speech
    phones = [("sil", 0.0, lead)] + [(p, a + lead, b + lead) for p, a, b in phones]
    phones.append(("sil", phones[-1][2], len(audio) / 16000))
    if rng.random() < p_augment:
        audio, steps = augment(audio, seed=int(rng.integers(2 ** 31)))
        return audio, phones, steps
    return audio * float(10 ** (rng.uniform(-12, 0) / 20)), phones, {}


def _espeak_clips(stop: int, seed: int, holdout: bool, p_augment: float, start: int = 0):
    """Clips start..stop-1 of espeak-ng speech: (i, audio (n,) 16 kHz, phones [(phone, start_s, end_s)], meta)."""
    from presenter.data.sentences import generated, sentences
    from presenter.data.tts import draw_speaker, synthesize

    texts = list(sentences()) + generated(600, seed=11 + seed)
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i, 1234])
        kw = draw_speaker(rng, holdout=holdout)
        kw["rate_wpm"] = int(rng.integers(120, 260))
        n_sent = int(rng.integers(1, 3))
        text = " ".join(texts[int(rng.integers(len(texts)))] for _ in range(n_sent))
        utt = synthesize(text, **kw)
        audio, phones, steps = _pad_and_augment(utt.audio, utt.phones, rng, p_augment)
        yield i, audio, phones, {"i": i, "voice": kw["voice"].name, "rate": kw["rate_wpm"], "pitch": kw["pitch"],
                                 "text": text, "aug": sorted(steps)}


def write_shards(out: Path, clips: int, source) -> None:
    """Features and labels of clips 0..clips-1 from source(stop, start) (yielding (i, audio, phones, meta))
    into out/shard-KKKK.npz + .json, SHARD_CLIPS clips each, each written to a temporary name and renamed;
    finished shards are skipped (resumable)."""
    from presenter.audio.features import FeatureConfig, features_for_clip
    from presenter.engines.onnxruntime import whisper_encode

    out.mkdir(parents=True, exist_ok=True)
    cfg, enc = FeatureConfig(), whisper_encode(1)
    for s0 in range(0, clips, SHARD_CLIPS):
        path = out / f"shard-{s0 // SHARD_CLIPS:04d}.npz"
        if path.exists():
            continue
        t0 = time.time()
        feats, labels, shares, clip_ids, meta = [], [], [], [], []
        for i, audio, phones, m in source(min(s0 + SHARD_CLIPS, clips), s0):
            f = features_for_clip(audio, cfg, encode=enc)
            lab, sh = frame_labels(phones, len(f))
            feats.append(f.astype(np.float16))
            labels.append(lab)
            shares.append(sh)
            clip_ids.append(np.full(len(f), i, np.int32))
            meta.append(m)
        meta_tmp = path.with_name(f".{path.stem}.tmp.json")
        meta_tmp.write_text(json.dumps(meta))
        meta_tmp.replace(path.with_suffix(".json"))
        tmp = path.with_name(f".{path.stem}.tmp.npz")
        np.savez(tmp, feats=np.concatenate(feats), labels=np.concatenate(labels),
                 shares=np.concatenate(shares), clip=np.concatenate(clip_ids))
        tmp.replace(path)
        log.info("%s: %d frames in %.0f s", path.name, sum(len(x) for x in labels), time.time() - t0)


def make_data(out: Path, clips: int, seed: int, holdout: bool, p_augment: float = 0.7) -> None:
    """espeak-ng clips (training voices, or the held-out ones) -> shards in out (`write_shards`)."""
    write_shards(out, clips, lambda stop, start: _espeak_clips(stop, seed, holdout, p_augment, start))


FESTIVAL_VOICES = ("cmu_us_slt_arctic_hts", "kal_diphone")   # Debian festvox-us-slt-hts, festvox-kallpc16k


def _festival_batch(texts: list[str], voice: str, stretches: list[float],
                    tmp: Path) -> list[tuple[np.ndarray, int, list]]:
    """Speak texts with festival (one process); -> [(int16 audio, sample rate, [(seg, end_s)])]."""
    import subprocess
    import wave

    lines = [f"(voice_{voice})"]
    for k, (t, st) in enumerate(zip(texts, stretches)):
        t = t.replace('\\', ' ').replace('"', ' ')
        lines += [f"(Parameter.set 'Duration_Stretch {st:.3f})",
                  f'(set! utt (utt.synth (Utterance Text "{t}")))',
                  f'(utt.save.wave utt "{tmp}/{k}.wav" \'riff)', f'(utt.save.segs utt "{tmp}/{k}.segs")']
    (tmp / "batch.scm").write_text("\n".join(lines) + "\n")
    try:
        subprocess.run(["festival", "-b", str(tmp / "batch.scm")], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("festival is not installed: apt-get install festival festvox-us-slt-hts "
                        "festvox-kallpc16k") from None
    except subprocess.CalledProcessError as e:
        raise UserError(f"festival failed (exit {e.returncode}): {e.stderr.strip()[-500:]}") from None
    out = []
    for k in range(len(texts)):
        with wave.open(str(tmp / f"{k}.wav")) as w:
            sr, x = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), "<i2")
        segs = []
        for line in (tmp / f"{k}.segs").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] != "#":
                segs.append((parts[2], float(parts[0])))
        out.append((x, sr, segs))
    return out


def festival_clips(clips: int, seed: int, p_augment: float = 0.7, start: int = 0):
    """Yield (index, audio (S,) float32 16 kHz, phones [(phone, start_s, end_s)], meta) for festival
    clips start..clips-1 (HTS slt and diphone kal alternate per block of 25), deterministic for seed.
    Speed/pitch vary by Duration_Stretch and by resampling (factor f: times x f, pitch / f)."""
    import tempfile

    from scipy.signal import resample_poly

    from presenter.data.sentences import generated, sentences

    texts = list(sentences()) + generated(600, seed=21 + seed)
    shard = SHARD_CLIPS
    for s0 in range(start - start % shard, clips, shard):
        rng = np.random.default_rng([seed, s0, 4321])
        idx = list(range(s0, min(s0 + shard, clips)))
        voice = FESTIVAL_VOICES[(s0 // shard) % len(FESTIVAL_VOICES)]
        tx = [" ".join(texts[int(rng.integers(len(texts)))] for _ in range(int(rng.integers(1, 3)))) for _ in idx]
        st = [float(rng.uniform(0.8, 1.3)) for _ in idx]
        with tempfile.TemporaryDirectory() as tmp:
            spoken = _festival_batch(tx, voice, st, Path(tmp))
        for i, text, stretch, (x, sr, segs) in zip(idx, tx, st, spoken):
            f_speed = float(rng.uniform(0.9, 1.1))
            target = int(round(16000 * f_speed / 100)) * 100
            g = np.gcd(target, sr)
            sp = resample_poly(x.astype(np.float32) / 32768, target // g, sr // g).astype(np.float32)
            scale = target / 16000
            phones, prev = [], 0.0
            for name, end in segs:
                name = "sil" if name in ("pau", "h#", "#", "brth") else name
                phones.append((name, prev * scale, end * scale))
                prev = end
            audio, phones, steps = _pad_and_augment(sp, phones, rng, p_augment)
            if i >= start:
                yield i, audio, phones, {"i": i, "voice": voice, "stretch": stretch, "speed": f_speed,
                                         "text": text, "aug": sorted(steps)}


def make_festival_data(out: Path, clips: int, seed: int, p_augment: float = 0.7) -> None:
    """Like `make_data` with festival voices (`festival_clips`)."""
    write_shards(out, clips, lambda stop, start: festival_clips(stop, seed, p_augment, start=start))


def load_data(dirs: list[Path]) -> dict[str, np.ndarray]:
    """All shards of the given data dirs -> feats (N, 768) float32, labels (N,), clip (N,) (unique per dir)."""
    parts: dict[str, list] = {"feats": [], "labels": [], "shares": [], "clip": []}
    for k, d in enumerate(dirs):
        shards = sorted(Path(d).glob("shard-*.npz"))
        if not shards:
            raise UserError(f"{d}: no shard-*.npz here; make data first: "
                            f"python -m presenter.train.labial data --out {d}")
        for p in shards:
            z = np.load(p)
            for key in parts:
                v = z[key]
                parts[key].append(v.astype(np.float32) if key == "feats" else
                                  v + k * 1_000_000 if key == "clip" else v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def train(data_dirs: list[Path], val_dir: Path | list[Path] | None, out: Path, *, epochs: int = 30, seed: int = 0,
          hidden: int = 64, past: int = 2, future: int = 1, weight_decay: float = 1e-3) -> dict:
    """Train `LabialProbe` on the data dirs; validate on val_dir (held-out espeak voices); write weights."""
    import torch
    from safetensors.torch import save_file

    from presenter.motion.labial import LabialConfig, LabialProbe, stack_context

    torch.manual_seed(seed)
    tr = load_data(data_dirs)
    cfg = LabialConfig(hidden=hidden, past=past, future=future)
    mean, std = tr["feats"].mean(0), tr["feats"].std(0) + 1e-3
    model = LabialProbe(cfg)
    model.set_norm(mean, std)

    def windows(d):
        x = np.concatenate([stack_context(d["feats"][d["clip"] == c], past, future) for c in np.unique(d["clip"])])
        y = np.concatenate([d["labels"][d["clip"] == c] for c in np.unique(d["clip"])])
        return torch.from_numpy(x), torch.from_numpy(y)

    x, y = windows(tr)
    counts = np.bincount(y.numpy(), minlength=3)
    w = torch.tensor(counts.sum() / (3 * np.maximum(counts, 1)), dtype=torch.float32) ** 0.5
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    lossf = torch.nn.CrossEntropyLoss(weight=w)
    g = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for b in range(0, len(x), 512):
            idx = perm[b:b + 512]
            xb = x[idx] + 0.1 * torch.randn(len(idx), x.shape[1], generator=g) * model.std.repeat(cfg.frames)
            loss = lossf(model.logits(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
        sched.step()
        if ep % 5 == 4 or ep == epochs - 1:
            log.info("epoch %d: loss %.4f", ep + 1, tot / len(x))
    model.eval()
    report = {"train_frames": int(len(x)), "train_counts": counts.tolist()}
    for vd in ([] if val_dir is None else [val_dir] if isinstance(val_dir, (str, Path)) else list(val_dir)):
        xv, yv = windows(load_data([vd]))
        with torch.inference_mode():
            p = model.probs(xv).numpy()
        report[Path(vd).name] = val_metrics(p, yv.numpy())
    out.mkdir(parents=True, exist_ok=True)               # each file to a temporary name, then renamed
    save_file({k: t.contiguous() for k, t in model.state_dict().items()}, str(out / ".model.safetensors.tmp"))
    (out / ".model.safetensors.tmp").replace(out / "model.safetensors")
    for name, data in (("config.json", cfg.__dict__), ("training.json", report)):
        (out / f".{name}.tmp").write_text(json.dumps(data, indent=2) + "\n")
        (out / f".{name}.tmp").replace(out / name)
    log.info("probe written to %s: %s", out, json.dumps(report))
    return report


def val_metrics(p: np.ndarray, y: np.ndarray) -> dict:
    """probs (N, 3), labels (N,) -> accuracy, AUC of P(bilabial) bilabial vs other speech."""
    from presenter.offline.judge import auc

    pb = p[:, BILABIAL]
    return {"val_frames": int(len(y)), "val_acc": float((p.argmax(1) == y).mean()),
            "val_auc_bilabial_vs_speech": auc(pb[y == BILABIAL], pb[y == SPEECH])}


def main() -> int:
    import torch

    from presenter.errors import run_command

    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(prog="python -m presenter.train.labial",
                                 description="Make synthetic training data for the bilabial-closure probe, or train "
                                             "it (presenter/models/weights/labial/MODEL_CARD.md has the commands "
                                             "behind the shipped probe).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data", help="synthesise speech with phone times and cache its features")
    d.add_argument("--out", type=Path, required=True, help="folder for the clips' features and labels")
    d.add_argument("--clips", type=int, default=400, help="clips to make")
    d.add_argument("--seed", type=int, default=0, help="random seed (texts, voices, augmentation)")
    d.add_argument("--holdout", action="store_true", help="espeak: use the held-out voices (a validation set)")
    d.add_argument("--festival", action="store_true", help="Debian festival voices instead of espeak-ng")
    t = sub.add_parser("train", help="train the probe on data folders")
    t.add_argument("--data", type=Path, nargs="+", required=True, help="training data folders")
    t.add_argument("--val", type=Path, nargs="*", help="validation data folders (metrics only)")
    t.add_argument("--out", type=Path, required=True, help="weights folder (config.json, model.safetensors)")
    t.add_argument("--epochs", type=int, default=30, help="passes over the data")
    t.add_argument("--hidden", type=int, default=64, help="hidden width")
    t.add_argument("--past", type=int, default=2, help="context frames before t")
    t.add_argument("--future", type=int, default=1, help="context frames after t (at most the driver's pose lead)")
    a = ap.parse_args()

    def job() -> None:
        if a.cmd == "data":
            if a.festival:
                make_festival_data(a.out, a.clips, a.seed)
            else:
                make_data(a.out, a.clips, a.seed, a.holdout)
        else:
            train(a.data, a.val, a.out, epochs=a.epochs, hidden=a.hidden, past=a.past, future=a.future)

    return run_command(ap.prog, job, verbose=False, fmt="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    raise SystemExit(main())
