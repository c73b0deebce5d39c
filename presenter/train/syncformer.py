"""`presenter train syncformer`: train the Style-SyncFormer and its style encoder on a corpus.

Runs alone or under `torchrun --nproc_per_node N` (DDP; gloo on CPU, nccl on GPU). Rank 0 logs,
checkpoints (temp file, then rename) and exports. A rerun with the same --out resumes from the
last checkpoint.

Losses (weights in TrainConfig):
- vertex: lip-weighted L2 of mouth-region displacements (cm^2), lips x4;
- velocity: L2 of frame-to-frame displacement differences (temporal consistency, no jitter);
- bilabial: L2 on the lip vertices at frames inside p/b/m closures, extra weight, so the
  lips seal on bilabials rather than averaging towards the neighbours' opening.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from presenter.audio.features import FeatureConfig
from presenter.face.canonical import LIPS_INNER, LIPS_OUTER
from presenter.models.lipsync import LipSyncModel
from presenter.models.style_encoder import StyleEncoderConfig
from presenter.models.syncformer import SyncFormerConfig
from presenter.train.syncformer_data import (ClipArrays, cache_features, fit_basis, load_split, mouth_region,
                                             region_weights)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000
    batch: int = 16              # per process
    window_frames: int = 64      # training window; the first `warm` frames get no loss (partial context)
    warm_frames: int = 8
    style_frames: int = 100      # reference clip length for the style encoder
    lr: float = 5e-4
    weight_decay: float = 0.01
    w_velocity: float = 2.0
    w_bilabial: float = 2.0
    ckpt_every: int = 500
    seed: int = 0


class _Batches:
    """Random training windows and same-style reference clips."""

    def __init__(self, clips: list[ClipArrays], cfg: TrainConfig, rank: int) -> None:
        self.clips = [c for c in clips if len(c.disp) >= cfg.window_frames]
        if not self.clips:
            raise ValueError(f"no training clip has {cfg.window_frames} frames")
        self.cfg, self.rng = cfg, np.random.default_rng(cfg.seed + 1000 * rank)
        self.by_style: dict[str, list[int]] = {}
        for i, c in enumerate(self.clips):
            self.by_style.setdefault(c.style, []).append(i)
        self.region = mouth_region()

    def _full(self, disp: np.ndarray) -> np.ndarray:
        out = np.zeros((len(disp), 468, 3), np.float32)
        out[:, self.region] = disp
        return out

    def __call__(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """feats (B, W, F), target (B, W, R, 3), bilabial (B, W), ref displacements (B, Tr, V, 3)."""
        w, tr = self.cfg.window_frames, self.cfg.style_frames
        f, y, bl, ref = [], [], [], []
        for _ in range(self.cfg.batch):
            i = int(self.rng.integers(len(self.clips)))
            c = self.clips[i]
            a = int(self.rng.integers(len(c.disp) - w + 1))
            f.append(c.feats[a:a + w].astype(np.float32))
            y.append(c.disp[a:a + w])
            bl.append(c.bilabial[a:a + w])
            peers = self.by_style[c.style]
            r = self.clips[peers[int(self.rng.integers(len(peers)))]]
            s = int(self.rng.integers(max(1, len(r.disp) - tr + 1)))
            rd = self._full(r.disp[s:s + tr])
            if len(rd) < tr:
                rd = np.pad(rd, ((0, tr - len(rd)), (0, 0), (0, 0)), mode="edge")
            ref.append(rd)
        return (torch.from_numpy(np.stack(f)), torch.from_numpy(np.stack(y)),
                torch.from_numpy(np.stack(bl)), torch.from_numpy(np.stack(ref)))


def losses(pred: Tensor, target: Tensor, bilabial: Tensor, weights: Tensor, lip_mask: Tensor,
           cfg: TrainConfig) -> dict[str, Tensor]:
    """pred, target (B, T, R, 3) cm; bilabial (B, T) bool; weights (R,); lip_mask (R,) bool."""
    sl = slice(cfg.warm_frames, None)
    p, t, b = pred[:, sl], target[:, sl], bilabial[:, sl]
    err = ((p - t) ** 2).sum(-1)                                          # (B, T, R)
    vertex = (err * weights).mean()
    velocity = ((torch.diff(p, dim=1) - torch.diff(t, dim=1)) ** 2).sum(-1).mul(weights).mean()
    lips = err[..., lip_mask]                                             # (B, T, L)
    bil = (lips * b[..., None]).sum() / (b.sum() * lips.shape[-1]).clamp(min=1)
    total = vertex + cfg.w_velocity * velocity + cfg.w_bilabial * bil
    return {"total": total, "vertex": vertex, "velocity": velocity, "bilabial": bil}


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(data: Path, out: Path, *, sync_cfg: SyncFormerConfig = SyncFormerConfig(),
          style_cfg: StyleEncoderConfig = StyleEncoderConfig(), feat_cfg: FeatureConfig = FeatureConfig(),
          cfg: TrainConfig = TrainConfig(), threads: int | None = None,
          compute_features: bool = True) -> LipSyncModel:
    """Train (or resume) and return the model; rank 0 writes checkpoints. compute_features=False trains
    on the clips whose features are already cached."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        if compute_features:
            cache_features(data, feat_cfg)
        (out / "options.json").write_text(json.dumps(
            {"data": str(data), "train": asdict(cfg), "syncformer": asdict(sync_cfg),
             "style_encoder": asdict(style_cfg), "features": asdict(feat_cfg), "world_size": world}, indent=2) + "\n")
    if distributed:
        dist.barrier()
    sync_cfg = replace(sync_cfg, feat_dim=feat_cfg.feat_dim, style_dim=style_cfg.style_dim)
    clips = load_split(data, feat_cfg, "train")
    model = LipSyncModel(sync_cfg, style_cfg, feat_cfg)
    model.sync.set_basis(*fit_basis(clips, sync_cfg.n_basis))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.05)
    step = 0
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step = int(state["step"])
        log.info("resumed from %s at step %d", ckpt, step)
    ddp = nn.parallel.DistributedDataParallel(model) if distributed else model
    batches = _Batches(clips, cfg, rank)
    region = mouth_region()
    weights = torch.from_numpy(region_weights(region))
    lip_mask = torch.from_numpy(np.isin(region, LIPS_OUTER + LIPS_INNER))
    reg_idx = torch.from_numpy(region)
    bar = tqdm(total=cfg.steps, initial=step, desc="train syncformer", disable=rank != 0 or not sys.stderr.isatty())
    history = []
    model.train()
    t0 = time.perf_counter()
    while step < cfg.steps:
        feats, target, bil, ref = batches()
        pred = ddp(feats, ref)[:, :, reg_idx]                                  # (B, W, R, 3)
        parts = losses(pred, target, bil, weights, lip_mask, cfg)
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        if rank == 0 and (step % 50 == 0 or step == cfg.steps):
            row = {"step": step, "s": round(time.perf_counter() - t0, 1), **{k: float(v.detach()) for k, v in parts.items()}}
            history.append(row)
            log.info("step %d %s", step, " ".join(f"{k}={v:.5f}" for k, v in row.items() if k not in ("step", "s")))
            with open(out / "losses.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if rank == 0 and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "scheduler": sched.state_dict(), "step": step}, ckpt)
    bar.close()
    model.eval()
    with torch.no_grad():
        refs = torch.cat([batches()[3] for _ in range(4)])
        model.default_style.copy_(model.style(refs).mean(0))
    if distributed:
        dist.barrier()
    return model


def model_card(data: Path, run: Path, metrics: dict | None) -> str:
    """The MODEL_CARD.md text: data, options, losses, metrics (or a note that none were measured)."""
    options = json.loads((Path(run) / "options.json").read_text()) if (Path(run) / "options.json").is_file() else {}
    lines = [
        "# Style-SyncFormer (presenter)", "",
        "Speech -> mouth motion of the 468-vertex face mesh, with speaking style. Architecture:",
        "`presenter/models/syncformer.py`, `presenter/models/style_encoder.py`; front-end: Whisper tiny.en",
        "encoder features (`presenter/audio/features.py`).", "",
        "## Data", "",
        f"Corpus `{data}`: synthetic speech (espeak-ng, exact phone timing) with mouth motion from the",
        "project's viseme model, rendered on public-domain portraits (`docs/corpus.md`). No real speech",
        "was used for training; real read speech (pocketsphinx-testdata) is used only for validation.", "",
        "## Training", "", "```json", json.dumps(options, indent=2), "```", "",
        "Losses: lip-weighted vertex L2 (lips x4), velocity L2, extra L2 on lip vertices at p/b/m frames.", "",
        "## Metrics", "",
    ]
    lines += ["```json", json.dumps(metrics, indent=2), "```"] if metrics else ["Not measured for this export."]
    lines += ["", "## Limits", "",
              "Learnt from a hand-built articulation model on synthetic voices: it can be no better than that",
              "model, and it has never seen a real talking mouth."]
    return "\n".join(lines) + "\n"
