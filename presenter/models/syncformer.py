"""Style-SyncFormer: speech features + a style code -> per-frame mouth displacements of the face mesh.

Legend: B batch, T video frames (25 fps), F speech-feature width, D model width, S style width,
K basis size, V = 468 mesh vertices. Displacements are in cm, in the canonical head frame,
relative to the person's neutral (closed-mouth) mesh.

Look-ahead without leakage: the transformer is causal over feature frames with a banded
mask (each frame sees at most `context_frames` frames back per layer); output j is the mouth
of video frame j. All look-ahead lives in the speech features, whose window for frame j ends
`lookahead_s` after the frame (presenter.audio.features). A frame's mouth depends on at most
n_layers * context_frames frames of past, and a streaming run over a window that long
reproduces the offline output exactly (tested).

Output basis: displacements live in a K-dimensional linear basis (PCA of the training
displacements of the lip and jaw region, stored as a buffer with the weights), so the network
cannot move the forehead or ears and needs few outputs.

Style: a style code (from `StyleEncoder`) modulates every block's layer norms (AdaLN):
LN(x) * (1 + gamma(s)) + beta(s).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from presenter.models.util import assert_shape


@dataclass(frozen=True)
class SyncFormerConfig:
    feat_dim: int = 768          # speech-feature width per video frame (presenter.audio.features)
    d_model: int = 192           # transformer width
    n_layers: int = 4
    n_heads: int = 4
    ff_mult: int = 4             # feed-forward hidden = ff_mult * d_model
    context_frames: int = 8      # past frames each layer may attend to (receptive field = n_layers * this)
    style_dim: int = 64          # style code width (0 = no style input)
    n_basis: int = 24            # displacement basis size
    n_vertices: int = 468
    dropout: float = 0.1

    @property
    def receptive_frames(self) -> int:
        """Feature frames one output depends on, current and look-ahead included."""
        return self.n_layers * self.context_frames + 1

    @classmethod
    def live(cls) -> "SyncFormerConfig":
        return cls()

    @classmethod
    def full(cls) -> "SyncFormerConfig":
        return cls(d_model=384, n_layers=6, n_heads=6, context_frames=12, style_dim=128, n_basis=32)

    def to_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: Path) -> "SyncFormerConfig":
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)} for SyncFormerConfig")
        return cls(**raw)


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale and shift come from the style code; identity modulation at init."""

    def __init__(self, d: int, style_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=style_dim == 0)
        self.mod = nn.Linear(style_dim, 2 * d) if style_dim else None
        if self.mod is not None:
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)

    def forward(self, x: Tensor, style: Tensor | None) -> Tensor:
        """x (B, T, D), style (B, S) -> (B, T, D)."""
        y = self.norm(x)
        if self.mod is None:
            return y
        gamma, beta = self.mod(style).unsqueeze(1).chunk(2, dim=-1)   # (B, 1, D) each
        return y * (1 + gamma) + beta


class Block(nn.Module):
    """Pre-norm transformer block with style-modulated norms and a banded causal mask."""

    def __init__(self, cfg: SyncFormerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.norm1, self.norm2 = AdaLayerNorm(d, cfg.style_dim), AdaLayerNorm(d, cfg.style_dim)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, cfg.ff_mult * d), nn.GELU(), nn.Linear(cfg.ff_mult * d, d))
        self.drop = nn.Dropout(cfg.dropout)

        # Learned relative-position bias per head and offset (0 = self, context = oldest visible).
        self.rel_bias = nn.Parameter(torch.zeros(cfg.n_heads, cfg.context_frames + 1))
        self.context = cfg.context_frames

    def attn_bias(self, t: int, device: torch.device) -> Tensor:
        """(nh, T, T) float: the relative-position bias inside the causal band, -inf outside."""
        i = torch.arange(t, device=device)
        d = i[:, None] - i[None, :]                                            # (T, T) offsets
        inside = (d >= 0) & (d <= self.context)
        bias = self.rel_bias[:, d.clamp(0, self.context)]                      # (nh, T, T)
        return bias.masked_fill(~inside, float("-inf"))

    def forward(self, x: Tensor, style: Tensor | None) -> Tensor:
        B, T, D = x.shape
        mask = self.attn_bias(T, x.device)
        q, k, v = self.qkv(self.norm1(x, style)).view(B, T, 3, self.n_heads, D // self.n_heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))                      # (B, nh, T, hs)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff(self.norm2(x, style)))


class SyncFormer(nn.Module):
    """Speech features (B, T, F) + style (B, S) -> mouth displacements (B, T, V, 3) in cm."""

    def __init__(self, cfg: SyncFormerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Sequential(nn.Linear(cfg.feat_dim, cfg.d_model), nn.GELU(), nn.Linear(cfg.d_model, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = AdaLayerNorm(cfg.d_model, cfg.style_dim)
        self.head = nn.Linear(cfg.d_model, cfg.n_basis)
        self.register_buffer("basis", torch.zeros(cfg.n_basis, cfg.n_vertices * 3))   # (K, V*3), cm
        self.register_buffer("basis_scale", torch.ones(cfg.n_basis))                   # (K,) coefficient std

    def coefficients(self, feats: Tensor, style: Tensor | None = None) -> Tensor:
        """(B, T, F), (B, S) -> basis coefficients (B, T, K)."""
        B, T, _ = feats.shape
        assert_shape(feats, (B, T, self.cfg.feat_dim))
        if self.cfg.style_dim:
            assert style is not None, "this SyncFormer was built with a style input"
            assert_shape(style, (B, self.cfg.style_dim))
        # Positions enter only as relative biases inside each block: a frame's output does not
        # depend on where the window started, so streaming equals offline.
        x = self.embed(feats)
        for blk in self.blocks:
            x = blk(x, style)
        return self.head(self.norm(x, style)) * self.basis_scale                # (B, T, K)

    def forward(self, feats: Tensor, style: Tensor | None = None) -> Tensor:
        """Feature frames (B, T, F) -> displacements (B, T, V, 3) of the same video frames."""
        B, T, _ = feats.shape
        return (self.coefficients(feats, style) @ self.basis).view(B, T, self.cfg.n_vertices, 3)

    @torch.no_grad()
    def set_basis(self, basis: Tensor, scale: Tensor) -> None:
        """Install the (K, V*3) displacement basis and its (K,) coefficient scales."""
        self.basis.copy_(basis)
        self.basis_scale.copy_(scale)
