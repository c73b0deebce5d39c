"""`presenter train generator`: train the rewired generator on mouth-window pairs.

A pair (presenter.train.generator_data.GeneratorPairs) is a dict of float32 tensors: target
(3, S, S) in [-1, 1], guidance (4, S, S) in [0, 1], mask (1, S, S) in [0, 1] (1 = paint),
reference (3, S, S) in [-1, 1] (another frame of the same person), weight (1, S, S) (mouth-region
loss weight).

Losses (weights in TrainConfig), on the composited output:
- L1, 1 - MS-SSIM (pytorch_msssim, no weights), and an L1 weighted by the pair's mouth weight map;
- from `gan_start` on: non-saturating GAN with a patch discriminator that sees the mask and the
  guidance, and lazy R1 on real images every `r1_every` steps.
An EMA of the generator's weights is what validation measures and what is exported.

Runs alone or under `torchrun --nproc_per_node N` (DDP; gloo on CPU, nccl on GPU). Rank 0 logs
(losses.jsonl), validates (mouth-region PSNR/SSIM inside the mask, a PNG grid), checkpoints (temp
file, then rename) and writes the EMA generator to `<run>/ema/`. A rerun with the same run folder
resumes from the last checkpoint.
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pytorch_msssim import ms_ssim
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from tqdm import tqdm

from presenter.models.generator import Generator, GeneratorConfig, PatchDiscriminator, save_generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch: int = 8                 # pairs per step, per process
    lr: float = 1e-3               # generator and discriminator, Adam
    decay_from: int = 0            # from this step the lr falls on a cosine to lr * lr_floor at `steps`; 0 = constant
    lr_floor: float = 0.05
    betas: tuple[float, float] = (0.5, 0.99)
    ema_beta: float = 0.999        # EMA decay per step (ramped up over the first steps)
    w_l1: float = 1.0
    w_msssim: float = 1.0
    w_mouth: float = 1.0           # L1 weighted by the pair's mouth weight map
    w_gan: float = 0.05
    gan_start: int = 2000          # steps of pure reconstruction before the GAN terms start
    r1_gamma: float = 0.5
    r1_every: int = 16
    log_every: int = 25
    val_every: int = 500
    ckpt_every: int = 250
    val_pairs: int = 64            # val pairs scored, spread evenly over the val split (no augmentation)
    max_minutes: float = 0.0       # stop (after a checkpoint) after this much wall time; 0 = no limit
    seed: int = 0


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """The lr at `step`: constant, then (from `decay_from`) a cosine down to `lr * lr_floor` at `steps`.

    A function of the step alone, so a resumed run (or one given a later `decay_from`) picks it up exactly.
    """
    if cfg.decay_from <= 0 or step < cfg.decay_from:
        return cfg.lr
    t = min(1.0, (step - cfg.decay_from) / max(1, cfg.steps - cfg.decay_from))
    return cfg.lr * (cfg.lr_floor + (1 - cfg.lr_floor) * 0.5 * (1 + math.cos(math.pi * t)))


def msssim_window(size: int) -> int:
    """The largest odd Gaussian window (<= 11) for which pytorch_msssim's 5 scales fit an image of side `size`."""
    win = 11
    while win > 3 and size <= (win - 1) * 16:
        win -= 2
    return win


def reconstruction_losses(out: Tensor, target: Tensor, weight: Tensor, cfg: TrainConfig) -> dict[str, Tensor]:
    """out, target (B, 3, S, S) in [-1, 1]; weight (B, 1, S, S) -> named loss terms and their weighted sum."""
    diff = (out - target).abs()
    l1 = diff.mean()
    mouth = (diff * weight).mean() / weight.mean().clamp(min=1e-6)
    msssim = 1 - ms_ssim((out + 1) / 2, (target + 1) / 2, data_range=1.0, win_size=msssim_window(out.shape[-1]))
    total = cfg.w_l1 * l1 + cfg.w_msssim * msssim + cfg.w_mouth * mouth
    return {"total": total, "l1": l1, "msssim": msssim, "mouth_l1": mouth}


def _gaussian(win: int, sigma: float) -> Tensor:
    x = torch.arange(win, dtype=torch.float32) - win // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor, *, win: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM (B, 1, S, S) of images (B, C, S, S) in [0, 1], mean over channels; 'same' padding."""
    C = a.shape[1]
    g = _gaussian(win, sigma)
    k = (g[:, None] * g[None, :]).expand(C, 1, win, win).contiguous()

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, [win // 2] * 4, mode="reflect"), k, groups=C)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(1, keepdim=True)


def masked_psnr_ssim(out: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mouth-region PSNR (dB) and SSIM per pair (B,), weighted by the mask; images (B, 3, S, S) in [-1, 1]."""
    a, b = (out + 1) / 2, (target + 1) / 2
    m = mask.sum((1, 2, 3)).clamp(min=1e-6)
    mse = (((a - b) ** 2).mean(1, keepdim=True) * mask).sum((1, 2, 3)) / m
    psnr = 10 * torch.log10(1.0 / mse.clamp(min=1e-10))
    ssim = (ssim_map(a, b) * mask).sum((1, 2, 3)) / m
    return psnr, ssim


def val_grid(batch: dict[str, Tensor], out: Tensor, rows: int = 8) -> np.ndarray:
    """A (rows*S, 4*S, 3) uint8 RGB sheet: reference, guidance (u, v, shade as RGB), generated, target."""
    def rgb(x: Tensor) -> np.ndarray:
        return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    cols = [rgb(batch["reference"]), (batch["guidance"][:, :3].clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy(),
            rgb(out), rgb(batch["target"])]
    n = min(rows, len(out))
    return np.concatenate([np.concatenate([c[i] for c in cols], 1) for i in range(n)], 0)


def _sync(module: nn.Module, *, grads: bool) -> None:
    """Under DDP: average the gradients of module over the processes (grads=True), or copy rank 0's
    parameters and buffers to every process (grads=False). A manual all-reduce, as in
    stylegan2-ada, because DistributedDataParallel does not support R1's double backward."""
    if not dist.is_initialized():
        return
    if grads:
        tensors = [p.grad for p in module.parameters() if p.grad is not None]
        if tensors:
            flat = torch.cat([t.flatten() for t in tensors])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            torch.nn.utils.vector_to_parameters(flat, tensors)
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


def _out_of_time(t0: float, minutes: float, device: torch.device) -> bool:
    """Whether `minutes` of wall time have passed since t0 as rank 0 sees it, so all processes stop at one step."""
    if minutes <= 0:
        return False
    flag = torch.tensor([float(time.perf_counter() - t0 > 60 * minutes)], device=device)
    if dist.is_initialized():
        dist.broadcast(flag, src=0)
    return bool(flag.item())


def _batches(loader: DataLoader, sampler: DistributedSampler | None, epoch: int) -> Iterator[dict[str, Tensor]]:
    """Batches forever, from `epoch` on; a dataset with `set_epoch` (new augmentations) is told each epoch."""
    while True:
        for obj in (sampler, loader.dataset):
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        yield from loader
        epoch += 1


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


@torch.no_grad()
def validate(g: Generator, pairs: Dataset, n_pairs: int, batch: int = 16,
             grid_rows: int = 8) -> tuple[dict[str, float], np.ndarray]:
    """Mean mouth-region PSNR/SSIM of g on n_pairs of `pairs` spread evenly over it (so over its
    identities), and a grid of grid_rows pairs spread the same way."""
    g.eval()

    def run(indices: np.ndarray) -> tuple[dict[str, Tensor], Tensor]:
        items = [pairs[int(i)] for i in indices]
        b = {k: torch.stack([it[k] for it in items]) for k in items[0]}
        return b, g(b["target"], b["mask"], b["guidance"], g.styles(b["reference"]))
    spread = np.unique(np.linspace(0, len(pairs) - 1, min(n_pairs, len(pairs))).round().astype(int))
    psnr, ssim = [], []
    for a in range(0, len(spread), batch):
        b, out = run(spread[a:a + batch])
        p, s = masked_psnr_ssim(out, b["target"], b["mask"])
        psnr.append(p)
        ssim.append(s)
    b, out = run(np.unique(np.linspace(0, len(pairs) - 1, min(grid_rows, len(pairs))).round().astype(int)))
    metrics = {"psnr": float(torch.cat(psnr).mean()), "ssim": float(torch.cat(ssim).mean()), "pairs": len(spread)}
    return metrics, val_grid(b, out, rows=grid_rows)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    tmp = path.with_name(f".{path.stem}.tmp.png")
    cv2.imwrite(str(tmp), rgb[..., ::-1])
    os.replace(tmp, path)


def train(train_pairs: Dataset, val_pairs: Dataset | None, run: Path, *,
          gen_cfg: GeneratorConfig = GeneratorConfig.live(), cfg: TrainConfig = TrainConfig(),
          threads: int | None = None, progress: bool | None = None, init: Generator | None = None) -> Generator:
    """Train (or resume from `run/checkpoint.pt`) and return the EMA generator (eval mode).

    progress: show a progress bar (default: when stderr is a terminal). init: start from these
    weights (fine-tuning; gen_cfg must be init's config) instead of a random generator.
    """
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if distributed else 0
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed + rank)
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)

    g, d = Generator(gen_cfg).to(device), PatchDiscriminator(gen_cfg).to(device)
    if init is not None:
        g.load_state_dict(init.state_dict())
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=cfg.betas)
    # Lazy R1: scale the D optimiser as in StyleGAN2 so the regulariser's interval does not change the dynamics.
    c = cfg.r1_every / (cfg.r1_every + 1)
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.lr * c, betas=(cfg.betas[0] ** c, cfg.betas[1] ** c))
    step = 0
    ckpt = run / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        g.load_state_dict(state["g"])
        d.load_state_dict(state["d"])
        g_ema.load_state_dict(state["g_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        step = int(state["step"])
        log.info("resumed from %s at step %d", ckpt, step)
    if rank == 0:
        (run / "options.json").write_text(json.dumps(
            {"train": asdict(cfg), "generator": asdict(gen_cfg), "train_pairs": len(train_pairs),
             "val_pairs": len(val_pairs) if val_pairs is not None else 0,
             "world_size": dist.get_world_size() if distributed else 1}, indent=2) + "\n")
    for module in (g, d, g_ema):
        _sync(module, grads=False)

    sampler = DistributedSampler(train_pairs, seed=cfg.seed) if distributed else None
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + step)     # a resumed run does not replay old batches
    loader = DataLoader(train_pairs, batch_size=cfg.batch, drop_last=len(train_pairs) >= cfg.batch,
                        sampler=sampler or RandomSampler(train_pairs, generator=gen), num_workers=0)
    batches = _batches(loader, sampler, epoch=step // max(1, len(loader)))
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=cfg.steps, initial=step, desc="train generator", disable=rank != 0 or not show)
    t0, t_log, s_log = time.perf_counter(), time.perf_counter(), step
    while step < cfg.steps:
        b = {k: v.to(device) for k, v in next(batches).items()}
        gan = step >= cfg.gan_start and cfg.w_gan > 0
        lr = learning_rate(step, cfg)
        for opt, scale in ((opt_g, 1.0), (opt_d, c)):
            for group in opt.param_groups:
                group["lr"] = lr * scale
        # Generator step: reconstruction (+ non-saturating GAN through a frozen D).
        g.train()
        out = g(b["target"], b["mask"], b["guidance"], g.styles(b["reference"]))
        parts = reconstruction_losses(out, b["target"], b["weight"], cfg)
        loss = parts["total"]
        if gan:
            d.requires_grad_(False)
            parts["g_gan"] = F.softplus(-d(out, b["mask"], b["guidance"])).mean()
            loss = loss + cfg.w_gan * parts["g_gan"]
            d.requires_grad_(True)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        _sync(g, grads=True)
        opt_g.step()
        # Discriminator step, with lazy R1 on the real pairs.
        if gan:
            fake, real = out.detach(), b["target"].detach().requires_grad_(step % cfg.r1_every == 0)
            d_real = d(real, b["mask"], b["guidance"])
            parts["d_loss"] = F.softplus(d(fake, b["mask"], b["guidance"])).mean() + F.softplus(-d_real).mean()
            d_total = parts["d_loss"]
            if real.requires_grad:
                # Per image, D's score is the mean over its patches (as in the losses): R1 on the
                # patch sum would be (patches)^2 times stronger and hold D flat at chance.
                (grad,) = torch.autograd.grad(d_real.mean((1, 2, 3)).sum(), real, create_graph=True)
                parts["r1"] = grad.square().sum((1, 2, 3)).mean()
                d_total = d_total + cfg.r1_gamma / 2 * parts["r1"] * cfg.r1_every
            opt_d.zero_grad(set_to_none=True)
            d_total.backward()
            _sync(d, grads=True)
            opt_d.step()
        with torch.no_grad():
            beta = min(cfg.ema_beta, (1 + step) / (10 + step))
            for p_ema, p in zip(g_ema.parameters(), g.parameters()):
                p_ema.lerp_(p, 1 - beta)
        step += 1
        bar.update(1)
        out_of_time = _out_of_time(t0, cfg.max_minutes, device)
        if rank != 0:
            if out_of_time:
                break
            continue
        if step % cfg.log_every == 0 or step == cfg.steps:
            now = time.perf_counter()
            row = {"step": step, "s_per_step": round((now - t_log) / max(1, step - s_log), 3), "lr": lr,
                   **{k: round(float(v.detach()), 5) for k, v in parts.items()}}
            t_log, s_log = now, step
            _append_jsonl(run / "losses.jsonl", row)
            bar.set_postfix(loss=row["total"])
        if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
            _save_atomic({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
                          "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step}, ckpt)
        if val_pairs is not None and (step % cfg.val_every == 0 or step == cfg.steps or out_of_time):
            metrics, grid = validate(g_ema, val_pairs, cfg.val_pairs)
            _append_jsonl(run / "val.jsonl", {"step": step, **metrics})
            log.info("step %d: val mouth PSNR %.2f dB, SSIM %.4f (%d pairs)", step, metrics["psnr"],
                     metrics["ssim"], metrics["pairs"])
            (run / "val").mkdir(exist_ok=True)
            _write_png(run / "val" / f"step_{step:07d}.png", grid)
            _write_png(run / "val_latest.png", grid)
            save_generator(g_ema, run / "ema", card=f"EMA generator of run {run} at step {step}.\n")
        if out_of_time:
            log.info("stopping after %.1f minutes at step %d (--max-minutes)", cfg.max_minutes, step)
            break
    bar.close()
    if distributed:
        dist.barrier()
    return g_ema
