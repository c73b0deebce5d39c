"""ONNX export of the Style-SyncFormer's streaming step and of its style encoder.

Legend: B batch, T frames, F speech-feature width (768), S style width (64), V = 468 vertices.

Streaming step: the live driver (`presenter.motion.syncformer_driver`) runs the SyncFormer over
its last `receptive_frames` feature frames (33 for the live preset) and keeps the newest k
outputs. The graph is that call: features (B, T, F) + style (B, S) -> displacement (B, T, V, 3)
in cm, with B and T dynamic (the banded attention mask is built from T inside the graph).

Style encoder: reference displacements (B, T, V, 3) cm -> style (B, S); runs once per reference
clip, B and T dynamic.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from presenter.export.graph import OPSET, write_onnx
from presenter.models.style_encoder import StyleEncoder
from presenter.models.syncformer import SyncFormer

STEP_INPUTS = ("features", "style")
STEP_OUTPUT = "displacement"
STYLE_INPUT = "reference"
STYLE_OUTPUT = "style"


class SyncFormerStep(nn.Module):
    """features (B, T, F), style (B, S) -> displacement (B, T, V, 3), cm: one streaming step."""

    def __init__(self, sync: SyncFormer) -> None:
        super().__init__()
        self.sync = sync

    def forward(self, features: Tensor, style: Tensor) -> Tensor:
        return self.sync(features, style)


def export_syncformer_onnx(sync: SyncFormer, path: Path, *, opset: int = OPSET) -> Path:
    """Write the streaming step graph (dynamic batch and frames) to path."""
    cfg = sync.cfg
    example = (torch.zeros(1, cfg.receptive_frames, cfg.feat_dim), torch.zeros(1, cfg.style_dim))
    return write_onnx(SyncFormerStep(sync), example, path, inputs=STEP_INPUTS, outputs=(STEP_OUTPUT,),
                      dynamic_axes={"features": {0: "batch", 1: "frames"}, "style": {0: "batch"},
                                    STEP_OUTPUT: {0: "batch", 1: "frames"}}, opset=opset)


def export_style_encoder_onnx(style: StyleEncoder, path: Path, *, opset: int = OPSET, n_vertices: int = 468) -> Path:
    """Write the style encoder (dynamic batch and reference frames) to path."""
    example = (torch.zeros(1, 50, n_vertices, 3),)
    return write_onnx(style, example, path, inputs=(STYLE_INPUT,), outputs=(STYLE_OUTPUT,),
                      dynamic_axes={STYLE_INPUT: {0: "batch", 1: "frames"}, STYLE_OUTPUT: {0: "batch"}}, opset=opset)
