"""The rewired generator (presenter.models.generator) and its trainer (presenter.train.generator)."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from presenter.errors import UserError
from presenter.models.generator import (Generator, GeneratorConfig, ModulatedConv, PatchDiscriminator, inverse_haar,
                                        load_generator, save_generator)
from presenter.train.generator import TrainConfig, learning_rate, masked_psnr_ssim, reconstruction_losses, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _inputs(cfg: GeneratorConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    S = cfg.crop_px
    return {"target": torch.rand(batch, 3, S, S, generator=g) * 2 - 1,
            "mask": torch.rand(batch, 1, S, S, generator=g),
            "guidance": torch.rand(batch, 4, S, S, generator=g),
            "reference": torch.rand(batch, 3, S, S, generator=g) * 2 - 1}


def _run(g: Generator, x: dict[str, torch.Tensor]) -> torch.Tensor:
    return g(x["target"], x["mask"], x["guidance"], g.styles(x["reference"]))


@pytest.mark.parametrize("preset", ["live", "tiny"])
def test_shapes_per_preset(preset: str) -> None:
    """Each preset maps (B, 3/1/4, S, S) inputs and a reference to an RGB window (B, 3, S, S) in [-1, 1]."""
    cfg = getattr(GeneratorConfig, preset)()
    g = Generator(cfg).eval()
    x = _inputs(cfg, batch=3)
    styles = g.styles(x["reference"])
    assert styles.shape == (3, g.style_width)
    out = g(x["target"], x["mask"], x["guidance"], styles)
    assert out.shape == (3, 3, cfg.crop_px, cfg.crop_px)
    assert out.abs().max() <= 1.0
    logits = PatchDiscriminator(cfg)(out, x["mask"], x["guidance"])
    assert logits.shape == (3, 1, cfg.crop_px >> len(cfg.disc_channels), cfg.crop_px >> len(cfg.disc_channels))


def test_wrong_input_shape_is_refused() -> None:
    """A guidance image of the wrong size fails at the generator's door with both shapes named."""
    cfg = GeneratorConfig.tiny()
    g = Generator(cfg)
    x = _inputs(cfg)
    with pytest.raises(AssertionError, match="expected shape"):
        g(x["target"], x["mask"], x["guidance"][..., :-1, :-1], g.styles(x["reference"]))


def test_full_preset_forward_backward_batch_1() -> None:
    """The GPU preset (256 px, dense modulated convs) runs forward and backward at batch 1 with finite grads."""
    cfg = GeneratorConfig.full()
    g = Generator(cfg)
    out = _run(g, _inputs(cfg, batch=1))
    assert out.shape == (1, 3, 256, 256)
    out.square().mean().backward()
    grads = [p.grad for p in g.parameters() if p.grad is not None]
    assert len(grads) > 0.9 * len(list(g.parameters()))
    assert all(torch.isfinite(gr).all() for gr in grads)


def test_eval_is_deterministic() -> None:
    """In eval mode the same inputs give bit-identical outputs (no noise, no dropout)."""
    cfg = GeneratorConfig.live()
    torch.manual_seed(0)
    g = Generator(cfg).eval()
    x = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(_run(g, x), _run(g, x), rtol=0, atol=0)


def test_composite_keeps_unmasked_region_exactly() -> None:
    """Where the mask is 0 the output is the target, bit for bit; where it is 1 the generator paints."""
    cfg = GeneratorConfig.tiny()
    g = Generator(cfg).eval()
    x = _inputs(cfg)
    x["mask"] = torch.zeros_like(x["mask"])
    x["mask"][..., 32:, 16:48] = 1.0
    with torch.no_grad():
        out = _run(g, x)
    keep = (x["mask"] == 0).expand_as(out)
    assert torch.equal(out[keep], x["target"][keep])
    assert not torch.equal(out[~keep], x["target"][~keep])


def test_masked_target_is_hidden_from_the_generator() -> None:
    """Changing the target inside the mask (mask = 1) changes nothing: the answer is not in the input."""
    cfg = GeneratorConfig.tiny()
    g = Generator(cfg).eval()
    x = _inputs(cfg)
    x["mask"] = torch.zeros_like(x["mask"])
    x["mask"][..., 32:, :] = 1.0
    y = dict(x, target=x["target"].clone())
    y["target"][..., 32:, :] = -x["target"][..., 32:, :]
    with torch.no_grad():
        a, b = _run(g, x), _run(g, y)
    torch.testing.assert_close(a[..., 32:, :], b[..., 32:, :], rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["separable", "dense"])
def test_demodulation_matches_explicit_weight(kind: str) -> None:
    """The cheap demodulation equals the norm of the explicitly modulated weight, so outputs have unit-norm weights."""
    torch.manual_seed(1)
    conv = ModulatedConv(6, 5, kind=kind)
    style = torch.randn(2, 6)
    if kind == "separable":
        w = conv.weight[:, :, 0, 0][None, :, :, None, None] * conv.dw[None, None, :, 0] * style[:, None, :, None, None]
    else:
        w = conv.weight[None] * style[:, None, :, None, None]                   # (B, Cout, Cin, 3, 3)
    explicit = torch.rsqrt(w.square().sum((2, 3, 4)) + 1e-8)
    torch.testing.assert_close(conv._demod(style), explicit, rtol=1e-5, atol=1e-6)
    x = torch.randn(2, 6, 9, 9)
    reference = torch.stack([F.conv2d(x[b:b + 1], w[b] * explicit[b][:, None, None, None], padding=1)[0]
                             for b in range(2)])
    torch.testing.assert_close(conv(x, style), reference, rtol=1e-4, atol=1e-5)


def test_inverse_haar_inverts_the_haar_transform() -> None:
    """inverse_haar(haar(x)) == x for an orthonormal one-level Haar analysis written out here."""
    x = torch.randn(2, 3, 8, 8)
    a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    ll, lh, hl, hh = (a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2
    bands = torch.stack([ll, lh, hl, hh], 2).flatten(1, 2)                     # (B, 4*C, R, R) per colour
    torch.testing.assert_close(inverse_haar(bands), x, rtol=0, atol=1e-6)


def test_config_round_trip_and_bad_keys(tmp_path: Path) -> None:
    """config.json round-trips every preset; an unknown or missing key is a UserError naming key and file."""
    for cfg in (GeneratorConfig.live(), GeneratorConfig.full(), GeneratorConfig.tiny()):
        cfg.to_json(tmp_path / "config.json")
        assert GeneratorConfig.from_json(tmp_path / "config.json") == cfg
    raw = asdict(GeneratorConfig.live())
    (tmp_path / "bad.json").write_text(json.dumps({**raw, "n_heads": 4}))
    with pytest.raises(UserError, match=r"bad\.json.*n_heads"):
        GeneratorConfig.from_json(tmp_path / "bad.json")
    del raw["style_dim"]
    (tmp_path / "missing.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"missing\.json.*style_dim"):
        GeneratorConfig.from_json(tmp_path / "missing.json")


def test_save_load_round_trip(tmp_path: Path) -> None:
    """save_generator + load_generator rebuild the same network: same output on the same input."""
    cfg = GeneratorConfig.tiny()
    g = Generator(cfg).eval()
    save_generator(g, tmp_path / "w", card="test\n")
    h = load_generator(tmp_path / "w")
    x = _inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(_run(h, x), _run(g, x), rtol=0, atol=0)
    with pytest.raises(UserError, match="no generator"):
        load_generator(tmp_path / "nothing")


def test_damaged_weights_are_refused(tmp_path: Path) -> None:
    """Weights whose bytes no longer match model.sha256 are refused with a UserError, not loaded."""
    save_generator(Generator(GeneratorConfig.tiny()), tmp_path, card="test\n")
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 0x01                                          # one flipped bit in the last tensor
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256"):
        load_generator(tmp_path)


def test_mouth_metrics_and_losses_are_zero_error_on_identity() -> None:
    """Identical images: PSNR very high, SSIM 1, reconstruction losses 0; a change inside the mask lowers both."""
    x = _inputs(GeneratorConfig.tiny())
    t = torch.linspace(-0.5, 0.5, 64).expand(2, 3, 64, 64).contiguous()          # smooth, like skin
    m = (x["mask"] > 0.5).float()
    psnr, ssim = masked_psnr_ssim(t, t, m)
    assert (psnr > 90).all() and torch.allclose(ssim, torch.ones(2), atol=1e-4)
    noisy = t + 0.2 * torch.randn_like(t) * m
    psnr2, ssim2 = masked_psnr_ssim(noisy, t, m)
    assert (psnr2 < 30).all() and (ssim2 < 0.9).all()
    parts = reconstruction_losses(t, t, torch.ones_like(m), TrainConfig())
    assert float(parts["total"]) == pytest.approx(0.0, abs=1e-5)


class _Pairs(torch.utils.data.Dataset):
    """n fixed pairs at S px: a skin-toned face patch whose dark mouth opens with the pair index;
    the guidance draws the same opening (coverage 0 inside it), the reference is the other pair."""

    def __init__(self, n: int, size: int) -> None:
        self.items = [self._make(i, n, size) for i in range(n)]
        for i in range(n):
            self.items[i]["reference"] = self.items[(i + 1) % n]["target"].clone()

    @staticmethod
    def _make(i: int, n: int, S: int) -> dict[str, torch.Tensor]:
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, S), torch.linspace(-1, 1, S), indexing="ij")
        opening = 0.1 + 0.4 * i / max(1, n - 1)
        mouth = ((xx / 0.5) ** 2 + ((yy - 0.2) / opening) ** 2 < 1).float()
        skin = torch.stack([0.6 + 0.2 * yy, 0.2 + 0.1 * xx, 0.1 + 0 * xx])
        target = skin * (1 - mouth) - 0.8 * mouth
        guidance = torch.stack([(xx + 1) / 2, (yy + 1) / 2, 1 - xx.abs(), 1 - mouth])
        mask = ((yy > -0.3) & (xx.abs() < 0.8)).float()[None]
        return {"target": target, "guidance": guidance, "mask": mask, "weight": 1 + 4 * mouth[None]}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def _masked_l1(g: Generator, pairs: _Pairs) -> float:
    b = {k: torch.stack([it[k] for it in pairs.items]) for k in pairs.items[0]}
    with torch.no_grad():
        out = _run(g.eval(), b)
    return float(((out - b["target"]).abs() * b["mask"]).sum() / (3 * b["mask"].sum()))


def test_tiny_overfit_loss_falls(tmp_path: Path) -> None:
    """60 steps on 2 fixed 64 px pairs cut the EMA generator's masked L1 at least 3x (reconstruction only)."""
    cfg = GeneratorConfig.tiny()
    pairs = _Pairs(2, cfg.crop_px)
    torch.manual_seed(0)
    before = _masked_l1(Generator(cfg), pairs)
    tc = TrainConfig(steps=60, batch=2, lr=3e-3, gan_start=10**9, log_every=10, val_every=60, ckpt_every=60,
                     val_pairs=2)
    g = train(pairs, pairs, tmp_path / "run", gen_cfg=cfg, cfg=tc, progress=False)
    after = _masked_l1(g, pairs)
    assert after < before / 3, f"masked L1 {before:.4f} -> {after:.4f}"
    val = [json.loads(line) for line in (tmp_path / "run" / "val.jsonl").read_text().splitlines()]
    assert val[-1]["step"] == 60 and val[-1]["psnr"] > 10
    assert (tmp_path / "run" / "val_latest.png").is_file()
    assert _masked_l1(load_generator(tmp_path / "run" / "ema"), pairs) == pytest.approx(after, abs=1e-6)


def test_resume_continues_the_step_count(tmp_path: Path) -> None:
    """A rerun with the same run folder resumes at the checkpoint's step, GAN and R1 included, and counts on."""
    cfg = GeneratorConfig.tiny()
    pairs = _Pairs(2, cfg.crop_px)
    tc = TrainConfig(steps=4, batch=2, gan_start=1, r1_every=2, log_every=1, val_every=100, ckpt_every=2)
    train(pairs, None, tmp_path, gen_cfg=cfg, cfg=tc, progress=False)
    first = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert first["step"] == 4
    train(pairs, None, tmp_path, gen_cfg=cfg, cfg=replace(tc, steps=6), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert any("r1" in r for r in rows[4:]) and all("d_loss" in r for r in rows[1:])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 6


def test_cli_defaults_match_train_config() -> None:
    """`presenter train generator`'s shown defaults are TrainConfig's (the CLI avoids importing torch)."""
    import argparse

    from presenter.train.cli import add_train_commands

    parser = argparse.ArgumentParser()
    add_train_commands(parser.add_subparsers(dest="cmd"), argparse.HelpFormatter)
    args = parser.parse_args(["train", "generator"])
    tc = TrainConfig()
    for name in ("steps", "batch", "lr", "decay_from", "gan_start", "val_every", "ckpt_every"):
        assert getattr(args, name) == getattr(tc, name), name
    assert np.isclose(args.max_minutes, tc.max_minutes)


def test_learning_rate_is_constant_then_a_cosine_down_to_the_floor() -> None:
    """decay_from 0 keeps the lr; otherwise it holds until decay_from, falls monotonically, is halfway at the
    midpoint and reaches lr * lr_floor at the last step (a function of the step, so a resume continues it)."""
    assert {learning_rate(s, TrainConfig(steps=100)) for s in (0, 50, 100)} == {TrainConfig().lr}
    cfg = TrainConfig(steps=1000, lr=1e-3, decay_from=200, lr_floor=0.05)
    assert learning_rate(0, cfg) == learning_rate(200, cfg) == 1e-3
    assert np.isclose(learning_rate(600, cfg), 1e-3 * (0.05 + 0.95 / 2))
    assert np.isclose(learning_rate(1000, cfg), 5e-5)
    lrs = [learning_rate(s, cfg) for s in range(200, 1001, 25)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


def _ddp_worker(rank: int, world: int, port: int, run: str) -> None:
    import os

    os.environ.update({"WORLD_SIZE": str(world), "RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"})
    torch.set_num_threads(1)
    import torch.distributed as dist

    cfg = GeneratorConfig.tiny()
    tc = TrainConfig(steps=3, batch=1, gan_start=1, r1_every=2, log_every=1, val_every=100, ckpt_every=3)
    g = train(_Pairs(2, cfg.crop_px), None, Path(run), gen_cfg=cfg, cfg=tc, progress=False)
    torch.save(g.state_dict(), Path(run) / f"ema_rank{rank}.pt")
    dist.destroy_process_group()


def test_two_process_training_keeps_the_copies_equal(tmp_path: Path) -> None:
    """Two gloo processes (different seeds, different pairs) end with identical EMA generators: gradients
    are averaged across processes, GAN and R1 steps included, and rank 0 alone writes the checkpoint."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"ema_rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert json.loads((tmp_path / "options.json").read_text())["world_size"] == 2
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 3


def test_discriminator_learns_under_r1(tmp_path: Path) -> None:
    """With the GAN on from step 0 and R1 every 4 steps, the patch discriminator's loss leaves chance
    (2 ln 2 = 1.386) within 40 steps: R1 must not hold it flat."""
    cfg = GeneratorConfig.tiny()
    tc = TrainConfig(steps=40, batch=2, lr=3e-3, gan_start=0, r1_every=4, log_every=1, val_every=100, ckpt_every=100)
    train(_Pairs(2, cfg.crop_px), None, tmp_path, gen_cfg=cfg, cfg=tc, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "losses.jsonl").read_text().splitlines()]
    assert min(r["d_loss"] for r in rows[-10:]) < 1.36, [r["d_loss"] for r in rows[-10:]]   # held flat: 1.385
