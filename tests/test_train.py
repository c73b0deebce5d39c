"""SyncFormer training runs end to end from the CLI: corpus -> DDP training on 2 CPU processes -> export -> resume."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from presenter.models.lipsync import load_lipsync

STEPS = 60               # single-process steps in the loss test (batch 4)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus") / "c"
    subprocess.run([sys.executable, "-m", "presenter", "data", "synth", "-o", str(root), "--clips", "6",
                    "--workers", "1"], check=True, capture_output=True, timeout=600)
    return root


def test_ddp_training_on_two_cpu_processes_exports_and_resumes(tiny_corpus: Path, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes trains, checkpoints and exports a loadable model; a rerun
    resumes from the checkpoint instead of starting over."""
    env = {**os.environ, "PRESENTER_HOME": str(tmp_path / "home"), "GLOO_SOCKET_IFNAME": "lo",
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "presenter", "train", "syncformer", "--data", str(tiny_corpus), "--out", str(out),
           "--steps", "6", "--batch", "2", "--ckpt-every", "3", "--threads", "1"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((out / "options.json").read_text())["world_size"] == 2
    assert (out / "checkpoint.pt").is_file()
    model = load_lipsync(out / "final")
    assert model.sync.cfg.feat_dim == model.feat_cfg.feat_dim
    cmd[cmd.index("--master_port") + 1] = str(_free_port())
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and "at step 6" in again.stderr


def test_training_lowers_the_loss_on_fixed_windows(tiny_corpus: Path, tmp_path: Path, one_torch_thread) -> None:
    """A short single-process run lowers the training loss, measured on the same 16 windows for a
    barely trained model (2 warm-up steps) and for the model after the run."""
    import dataclasses

    import numpy as np
    import torch

    from presenter.audio.features import FeatureConfig
    from presenter.face.canonical import LIPS_INNER, LIPS_OUTER
    from presenter.train.syncformer import TrainConfig, _Batches, losses, train
    from presenter.train.syncformer_data import load_split, mouth_region, region_weights

    cfg = TrainConfig(steps=STEPS, batch=4, ckpt_every=STEPS)
    barely = train(tiny_corpus, tmp_path / "barely", cfg=dataclasses.replace(cfg, steps=2, ckpt_every=2))
    trained = train(tiny_corpus, tmp_path / "trained", cfg=cfg, compute_features=False)

    region = mouth_region()
    weights = torch.from_numpy(region_weights(region))
    lip_mask = torch.from_numpy(np.isin(region, LIPS_OUTER + LIPS_INNER))
    feats, target, bilabial, ref = _Batches(load_split(tiny_corpus, FeatureConfig(), "train"),
                                            dataclasses.replace(cfg, batch=16, seed=123), rank=0)()

    def loss(model) -> float:
        with torch.no_grad():
            pred = model(feats, ref)[:, :, torch.from_numpy(region)]
            return float(losses(pred, target, bilabial, weights, lip_mask, cfg)["total"])

    before, after = loss(barely), loss(trained)
    print(f"\nloss on 16 fixed windows: {before:.5f} after 2 steps, {after:.5f} after {STEPS}")
    assert after < 0.7 * before, (before, after)
