"""Trace a module to ONNX with named inputs and dynamic axes (the one place torch.onnx.export is called).

The TorchScript-based exporter is used (`dynamo=False`): the dynamo exporter needs onnxscript,
which is not installed. Shape asserts in the modules trace as constants for the traced shape
and hold for every shape the dynamic axes allow (parity tests run other shapes), so the
exporter's TracerWarnings about them are silenced here.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # torch is imported when a graph is written: `presenter --help` works without it
    import torch
    from torch import nn

OPSET = 17       # ONNX Runtime 1.18+ and TensorRT 10 both run it; LayerNormalization is native from 17
MAX_OPSET = 20   # the TorchScript exporter's newest (torch 2.13 warns above it and fails from 24)


def write_onnx(module: nn.Module, example: Sequence[torch.Tensor], path: Path, *, inputs: Sequence[str],
               outputs: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]], opset: int = OPSET) -> Path:
    """Trace module(*example) in eval mode without grads and write it to path (not atomic: callers
    write to a temporary name and rename). dynamic_axes: tensor name -> {axis: axis name}."""
    modes = [(m, m.training) for m in module.modules()]   # each one's: a fresh wrapper is in training mode
    module.eval()
    try:
        import torch

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, tuple(example), str(path), input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()}, opset_version=opset,
                              dynamo=False)
    finally:
        for m, training in modes:
            m.training = training
    return Path(path)
