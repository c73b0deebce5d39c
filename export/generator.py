"""ONNX export of the rewired generator's per-frame graph (guidance encoder + synthesis + composite).

The reference encoder is not in the graph: its output, the per-layer styles (B, N), is an input,
computed once per avatar with `Generator.styles`. The batch axis is dynamic.

Graph inputs: target (B, 3, S, S) in [-1, 1], mask (B, 1, S, S), guidance (B, 4, S, S), styles (B, N);
output: image (B, 3, S, S) in [-1, 1], the composite `out * mask + target * (1 - mask)`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from presenter.models.generator import Generator

INPUTS = ("target", "mask", "guidance", "styles")
OUTPUT = "image"
OPSET = 17


def export_generator_onnx(model: Generator, path: Path) -> Path:
    """Write model's per-frame graph to path (a temporary file, then renamed) and return path."""
    path = Path(path)
    S, N = model.cfg.crop_px, model.style_width
    example = (torch.zeros(1, 3, S, S), torch.ones(1, 1, S, S), torch.zeros(1, 4, S, S), torch.ones(1, N))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            torch.onnx.export(model, example, str(tmp), input_names=list(INPUTS), output_names=[OUTPUT],
                              dynamic_axes={name: {0: "batch"} for name in (*INPUTS, OUTPUT)},
                              opset_version=OPSET, dynamo=False)   # dynamo=True needs onnxscript, not installed
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        model.train(was_training)
    return path


def per_frame_flops(model: Generator) -> int:
    """FLOPs of one frame (batch 1) of the per-frame graph, counted by torch's FlopCounterMode (convs, matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    S, N = model.cfg.crop_px, model.style_width
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, S, S), torch.ones(1, 1, S, S), torch.zeros(1, 4, S, S), torch.ones(1, N))
    return int(counter.get_total_flops())


def onnx_speed(model: Generator, *, threads: int = 2, repeats: int = 200, work_dir: Path) -> dict[str, float]:
    """ONNX Runtime milliseconds per frame (batch 1) of the per-frame graph: p50, p90, and GFLOP/s at p50."""
    import time

    import numpy as np

    from presenter.engines.onnxruntime import session

    sess = session(export_generator_onnx(model, Path(work_dir) / "generator-speed.onnx"), threads)
    S, N = model.cfg.crop_px, model.style_width
    rng = np.random.default_rng(0)
    feed = {"target": rng.uniform(-1, 1, (1, 3, S, S)).astype(np.float32),
            "mask": rng.uniform(0, 1, (1, 1, S, S)).astype(np.float32),
            "guidance": rng.uniform(0, 1, (1, 4, S, S)).astype(np.float32),
            "styles": rng.normal(1, 0.1, (1, N)).astype(np.float32)}
    for _ in range(10):
        sess.run(None, feed)
    ms = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        ms.append((time.perf_counter() - t) * 1e3)
    p50, p90 = float(np.percentile(ms, 50)), float(np.percentile(ms, 90))
    return {"p50_ms": p50, "p90_ms": p90, "gflop_per_s": per_frame_flops(model) / 1e6 / p50}
