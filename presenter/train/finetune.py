"""Fast personalisation: fine-tune the generator on one person's footage and store it in their pack,
with the person's speaking style (their mouth motion, which the SyncFormer's style encoder reads).

Self-supervised, as the generator was trained: each frame's own fitted mesh (guidance) and the
frame with its lips masked reconstruct the frame; a reference frame of the same person gives the
styles. The first 80 % of the footage trains, the last 20 % is held out and scored (mouth PSNR /
SSIM on the lips mask) before and after. The result goes to PACK/generator, which the renderer
prefers over the shipped weights (`presenter.render.generator.pack_weights_dir`); the footage's
mouth motion from the person's own neutral mesh goes to PACK/speaking_style.npz, which the live
pipeline hands to the SyncFormer as its style reference.

    presenter avatar finetune ~/avatars/me --video me-talking.mp4 --minutes 10
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from presenter.avatar.pack import AvatarPack, load_pack, write_speaking_style
from presenter.errors import UserError
from presenter.face.align import mouth_window, to_mouth_window, warp_points
from presenter.face.fit import motion_from_neutral, mouth_opening_cm
from presenter.face.guidance import render_guidance
from presenter.paths import home
from presenter.face.masks import lips_mask
from presenter.models.generator import Generator, load_generator, save_generator
from presenter.render.generator import PACK_GENERATOR, WINDOW, default_weights_dir, window_taper
from presenter.train.generator import TrainConfig, masked_psnr_ssim, train
from presenter.train.generator_data import chw, lip_weight

log = logging.getLogger(__name__)

HELD_OUT_SHARE = 0.2          # the footage's last frames, never trained on, scored before and after
MIN_STYLE_RANGE_CM = 0.3     # footage whose lip gap spans less is not speech: its "style" would freeze the mouth
MIN_FRAMES = 10               # fewer frames cannot be split into training and held-out parts
FINETUNE = TrainConfig(steps=2000, batch=8, lr=2e-4, w_gan=0.0, gan_start=10 ** 9, val_every=100,
                       ckpt_every=50, val_pairs=64, log_every=10)


class FramePairs(Dataset):
    """Self-reconstruction pairs of a pack's frames (S = 128, the mouth window), as GeneratorPairs:

    target (3, S, S) in [-1, 1] the frame's window; guidance (4, S, S) of its own fitted mesh;
    mask (1, S, S) its lips mask; reference (3, S, S) a reference frame's window; weight (1, S, S).
    Items are the frames in `frames`, in order; reference frames cycle over `references`.
    """

    def __init__(self, pack: AvatarPack, frames: list[int], references: list[int]) -> None:
        if not frames or not references:
            raise ValueError("FramePairs needs at least one frame and one reference")
        self.frames, self.references = list(frames), list(references)
        self._crops = pack.crops[256]["crops"]
        self._verts = pack.face["verts_px"]
        self._align = pack.face["align_256"]
        self._taper = window_taper()

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = self.frames[index]
        ref = self.references[index % len(self.references)]
        v = to_mouth_window(warp_points(self._verts[i], self._align[i]))           # (V, 3) window px
        target = mouth_window(self._crops[i]).astype(np.float32) / 255.0
        reference = mouth_window(self._crops[ref]).astype(np.float32) / 255.0
        mask = lips_mask(v, WINDOW) * self._taper
        return {"target": chw(target * 2.0 - 1.0), "guidance": chw(render_guidance(v, WINDOW)),
                "mask": chw(mask[..., None]), "reference": chw(reference * 2.0 - 1.0),
                "weight": chw(lip_weight(v, WINDOW)[..., None])}


@dataclass(frozen=True)
class FinetuneReport:
    frames_trained: int
    frames_held_out: int
    steps: int
    minutes: float
    before: dict[str, float]   # held-out mouth PSNR (dB) / SSIM with the starting weights
    after: dict[str, float]    # the same with the fine-tuned weights
    weights: str               # where they were stored
    style_frames: int          # footage frames whose mouth motion became the pack's speaking style (0: none)


@torch.no_grad()
def score(g: Generator, pairs: FramePairs, batch: int = 16) -> dict[str, float]:
    """Mean lips-mask PSNR (dB) and SSIM of g on every pair."""
    g.eval()
    psnr, ssim = [], []
    for a in range(0, len(pairs), batch):
        items = [pairs[j] for j in range(a, min(len(pairs), a + batch))]
        b = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        p, s = masked_psnr_ssim(g(b["target"], b["mask"], b["guidance"], g.styles(b["reference"])),
                                b["target"], b["mask"])
        psnr.append(p)
        ssim.append(s)
    return {"psnr": round(float(torch.cat(psnr).mean()), 3), "ssim": round(float(torch.cat(ssim).mean()), 4)}


def _talks(canons: np.ndarray) -> bool:
    """Does the footage's mouth move like speech (its inner-lip gap spans MIN_STYLE_RANGE_CM or more)?"""
    p5, p95 = np.percentile(mouth_opening_cm(canons), [5, 95])
    return bool(p95 - p5 >= MIN_STYLE_RANGE_CM)


def split_frames(n: int) -> tuple[list[int], list[int]]:
    """(trained, held out): the first 80 % of n frames and the last 20 % (at least one each)."""
    if n < MIN_FRAMES:
        raise UserError(f"the footage has {n} frames with a face; fine-tuning needs at least {MIN_FRAMES} "
                        "(about half a second): give a longer video")
    held = max(1, int(round(n * HELD_OUT_SHARE)))
    return list(range(n - held)), list(range(n - held, n))


def finetune(pack_dir: Path, *, video: Path | None = None, minutes: float = 10.0, steps: int | None = None,
             threads: int | None = None, progress: bool | None = None, run: Path | None = None) -> FinetuneReport:
    """Fine-tune the generator on the pack's footage (or `video`'s) and store it in PACK/generator.

    Resumes an interrupted run (its checkpoints live in `run`, by default under $PRESENTER_HOME/runs).
    """
    from presenter.avatar.create import create_from_video

    pack = load_pack(pack_dir)
    start_dir = default_weights_dir()
    with tempfile.TemporaryDirectory(prefix="presenter-finetune-") as tmp:
        if video is not None:
            log.info("tracking %s (the footage to learn from)", video)
            footage = load_pack(create_from_video(video, Path(tmp) / "footage", loop=False))
        elif pack.manifest.get("source", {}).get("kind") == "video":
            footage = pack
        else:
            raise UserError(f"{pack_dir} was made from a still image: its frames hold one mouth at rest, "
                            "nothing to learn from. Pass --video with footage of the person talking")
        trained, held = split_frames(footage.n_frames)
        speaking_style = motion_from_neutral(footage.face["canon"])
        refs = [r for r in footage.reference_indices if r in trained] or trained[:1]
        train_pairs, held_pairs = FramePairs(footage, trained, refs), FramePairs(footage, held, refs)
        start = load_generator(start_dir)
        before = score(start, held_pairs)
        cfg = replace(FINETUNE, steps=steps or FINETUNE.steps, max_minutes=minutes,
                      val_pairs=min(FINETUNE.val_pairs, len(held)))
        run = Path(run) if run else home() / "runs" / f"finetune-{pack.root.name}-{_footage_key(pack, video)}"
        log.info("fine-tuning on %d frames (%d held out) for at most %d steps / %.1f min; run folder %s",
                 len(trained), len(held), cfg.steps, minutes, run)
        t0 = time.perf_counter()
        g = train(train_pairs, held_pairs, run, gen_cfg=start.cfg, cfg=cfg, threads=threads, progress=progress,
                  init=start)
        elapsed = (time.perf_counter() - t0) / 60
        after = score(g, held_pairs)
        step = int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])
    out = pack.root / PACK_GENERATOR
    card = (f"Generator fine-tuned on {video or 'the pack footage'} ({len(trained)} frames, {step} steps, "
            f"{elapsed:.1f} min on this run), from the shipped weights.\n\nHeld-out frames "
            f"(last {len(held)}): mouth PSNR {before['psnr']} -> {after['psnr']} dB, "
            f"SSIM {before['ssim']} -> {after['ssim']}.\n")
    _store(g, out, card)
    talks = _talks(footage.face["canon"])
    if talks:
        write_speaking_style(pack.root, speaking_style)
    else:
        log.warning("the footage's mouth hardly moves (inner-lip gap p95 - p5 under %.1f cm): its speaking style "
                    "is not stored, the SyncFormer keeps its default; footage of the person talking gives theirs",
                    MIN_STYLE_RANGE_CM)
    report = FinetuneReport(len(trained), len(held), step, round(elapsed, 2), before, after, str(out),
                            len(speaking_style) if talks else 0)
    (out / "finetune.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _footage_key(pack: AvatarPack, video: Path | None) -> str:
    """8 hex digits naming a run: the pack and the footage (path, size, modification time)."""
    parts = [str(pack.root.resolve())]
    if video is not None:
        st = Path(video).stat()
        parts += [str(Path(video).resolve()), str(st.st_size), str(st.st_mtime_ns)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]


def _store(g: Generator, out: Path, card: str) -> None:
    """Write the weights to a temporary folder beside `out`, then swap it in: a reader sees the old or the new."""
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_generator(g, tmp, card)
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
