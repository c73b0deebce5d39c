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
