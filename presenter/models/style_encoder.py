"""Style encoder: a reference talking clip's mouth motion -> a style code for the SyncFormer.

Legend: B batch, T frames of the reference clip, S style width. The input is the displacement
of the lip and jaw landmarks from the person's neutral mesh (cm, canonical frame), so the code
describes how a person moves (amplitude, spread, rhythm), not what they look like. A temporal
convolution stack, then mean and standard deviation over time, then an MLP.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from presenter.face.canonical import CHIN, LIPS_INNER, LIPS_OUTER, MOUTH_CORNERS
from presenter.models.util import assert_shape

STYLE_VERTICES = tuple(dict.fromkeys(LIPS_OUTER + LIPS_INNER + MOUTH_CORNERS + (CHIN,)))


@dataclass(frozen=True)
class StyleEncoderConfig:
    hidden: int = 128        # conv width
    style_dim: int = 64      # output code width; must equal SyncFormerConfig.style_dim
    n_layers: int = 3
    kernel: int = 5          # temporal kernel, frames

    @property
    def in_dim(self) -> int:
        return len(STYLE_VERTICES) * 3


class StyleEncoder(nn.Module):
    """Reference displacements (B, T, V, 3) of the full mesh -> style code (B, S)."""

    def __init__(self, cfg: StyleEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c = cfg.in_dim
        for _ in range(cfg.n_layers):
            layers += [nn.Conv1d(c, cfg.hidden, cfg.kernel, padding=cfg.kernel // 2), nn.GELU()]
            c = cfg.hidden
        self.convs = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Linear(2 * cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.style_dim))
        self.register_buffer("ids", torch.tensor(STYLE_VERTICES))

    def forward(self, disp: Tensor) -> Tensor:
        B, T = disp.shape[:2]
        assert_shape(disp, (B, T, None, 3))
        x = disp[:, :, self.ids].reshape(B, T, -1).transpose(1, 2) * 10.0      # (B, 3V', T), ~unit scale (mm)
        h = self.convs(x)                                                       # (B, H, T)
        pooled = torch.cat([h.mean(-1), h.std(-1, unbiased=False)], dim=-1)    # (B, 2H)
        return assert_shape(self.out(pooled), (B, self.cfg.style_dim))
