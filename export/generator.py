"""ONNX export of the rewired generator's per-frame graph (guidance encoder + synthesis + composite).

The reference encoder is not in the graph: its output, the per-layer styles (B, N), is an input,
computed once per avatar with `Generator.styles` (exported on its own by `export_styles_onnx`).
The batch axis is dynamic.

Graph inputs: target (B, 3, S, S) in [-1, 1], mask (B, 1, S, S), guidance (B, 4, S, S), styles (B, N);
output: image (B, 3, S, S) in [-1, 1], the composite `out * mask + target * (1 - mask)`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from presenter.export.graph import OPSET, write_onnx
from presenter.models.generator import Generator

INPUTS = ("target", "mask", "guidance", "styles")
OUTPUT = "image"
REFERENCE_INPUT = "reference"
STYLES_OUTPUT = "styles"


class GeneratorStyles(nn.Module):
    """reference (B, 3, S, S) in [-1, 1] -> per-layer styles (B, N): the once-per-avatar graph."""

    def __init__(self, model: Generator) -> None:
        super().__init__()
        self.model = model

    def forward(self, reference: Tensor) -> Tensor:
        return self.model.styles(reference)


def export_generator_onnx(model: Generator, path: Path, *, opset: int = OPSET) -> Path:
    """Write model's per-frame graph to path (a temporary file, then renamed) and return path."""
    path = Path(path)
    S, N = model.cfg.crop_px, model.style_width
    example = (torch.zeros(1, 3, S, S), torch.ones(1, 1, S, S), torch.zeros(1, 4, S, S), torch.ones(1, N))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write_onnx(model, example, tmp, inputs=INPUTS, outputs=(OUTPUT,),
                   dynamic_axes={name: {0: "batch"} for name in (*INPUTS, OUTPUT)}, opset=opset)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def export_styles_onnx(model: Generator, path: Path, *, opset: int = OPSET) -> Path:
    """Write the reference encoder + style affines (reference frame -> styles, dynamic batch) to path."""
    S = model.cfg.crop_px
    return write_onnx(GeneratorStyles(model), (torch.zeros(1, 3, S, S),), path, inputs=(REFERENCE_INPUT,),
                      outputs=(STYLES_OUTPUT,),
                      dynamic_axes={REFERENCE_INPUT: {0: "batch"}, STYLES_OUTPUT: {0: "batch"}}, opset=opset)


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
