"""The inference networks that export to ONNX, and `export_network`: graph + meta.json, atomically.

Each `Network` knows how to load its PyTorch module from shipped (or given) weights, which file
those weights are and their sha256, how to trace it, the ranges of its dynamic axes (min, opt,
max: TensorRT's shape profiles are built from them) and a plausible input of live shape for
benches. Modules take their inputs positionally in `Network.inputs` order.

| name | graph | runs |
|---|---|---|
| syncformer | streaming step: features (B, T, 768) + style (B, 64) -> displacement (B, T, 468, 3) cm | every frame |
| style-encoder | reference (B, T, 468, 3) cm -> style (B, 64) | once per reference clip |
| whisper | log-mel (B, 80, T) -> features (B, T/2, 384) | every frame (1 s window) |
| generator | target, mask, guidance (B, *, 128, 128) + styles (B, N) -> image (B, 3, 128, 128) | every speaking frame |
| generator-styles | reference (B, 3, 128, 128) -> styles (B, N) | once per avatar |
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from presenter.errors import UserError
from presenter.export.graph import MAX_OPSET, OPSET

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

MIN_OPSET = 14   # scaled_dot_product_attention and LayerNorm export from 14 on


@dataclass(frozen=True)
class Network:
    name: str
    summary: str                                      # one line for --help and tables
    runs: str                                         # "frame", "reference clip" or "avatar": how often it runs live
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dim_ranges: Mapping[str, tuple[int, int, int]]    # dynamic axis -> (min, opt, max), for TensorRT profiles
    load: Callable[[Path | None], nn.Module]          # weights folder (None = shipped) -> module, eval, fp32
    source: Callable[[Path | None], tuple[Path, str]]  # weights folder -> (weights file, its sha256)
    trace: Callable[[nn.Module, Path, int], Path]     # (module, path, opset) -> path
    example: Callable[[nn.Module, int, np.random.Generator], dict[str, np.ndarray]]   # live-shaped feeds

    def axes_meta(self) -> dict[str, dict[str, int]]:
        """dim_ranges as meta.json writes them: axis -> {"min", "opt", "max"}."""
        return {k: dict(zip(("min", "opt", "max"), v)) for k, v in self.dim_ranges.items()}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# --- SyncFormer and its style encoder ------------------------------------------------------------

def _lipsync(weights: Path | None):
    from presenter.models.lipsync import load_lipsync

    return load_lipsync(weights)


def _lipsync_source(weights: Path | None) -> tuple[Path, str]:
    from presenter.models.lipsync import default_weights_dir

    path = (Path(weights) if weights else default_weights_dir()) / "model.safetensors"
    return path, sha256_file(path)


def _load_step(weights: Path | None) -> nn.Module:
    from presenter.export.syncformer import SyncFormerStep

    return SyncFormerStep(_lipsync(weights).sync).eval()


def _trace_step(module: nn.Module, path: Path, opset: int) -> Path:
    from presenter.export.syncformer import export_syncformer_onnx

    return export_syncformer_onnx(module.sync, path, opset=opset)


def _example_step(module: nn.Module, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"features": rng.normal(0, 1, (batch, 33, 768)).astype(np.float32),
            "style": rng.normal(0, 1, (batch, 64)).astype(np.float32)}


def _trace_style(module: nn.Module, path: Path, opset: int) -> Path:
    from presenter.export.syncformer import export_style_encoder_onnx

    return export_style_encoder_onnx(module, path, opset=opset)


def _example_style(module: nn.Module, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"reference": rng.normal(0, 0.1, (batch, 50, 468, 3)).astype(np.float32)}   # 2 s clip, cm


# --- Whisper tiny.en encoder ---------------------------------------------------------------------

def _load_whisper(weights: Path | None) -> nn.Module:
    from presenter.audio.whisper import load_encoder

    return load_encoder(Path(weights) / "model.bin" if weights else None)


def _whisper_source(weights: Path | None) -> tuple[Path, str]:
    from presenter.audio.whisper import MODEL_SHA256, model_dir, verify_model_file

    path = (Path(weights) if weights else model_dir()) / "model.bin"
    verify_model_file(path)                      # checked against MODEL_SHA256 (cached per file state)
    return path, MODEL_SHA256


def _trace_whisper(module: nn.Module, path: Path, opset: int) -> Path:
    from presenter.audio.whisper import export_onnx

    return export_onnx(module, path, opset=opset)


def _example_whisper(module: nn.Module, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"mel": rng.uniform(-1, 1, (batch, 80, 100)).astype(np.float32)}    # one 1 s window


# --- generator -----------------------------------------------------------------------------------

def _generator_dir(weights: Path | None) -> Path:
    from presenter.render.generator import default_weights_dir

    return Path(weights) if weights else default_weights_dir()


def _load_generator(weights: Path | None) -> nn.Module:
    from presenter.models.generator import load_generator

    return load_generator(_generator_dir(weights))     # checks model.safetensors against model.sha256


def _generator_source(weights: Path | None) -> tuple[Path, str]:
    d = _generator_dir(weights)
    return d / "model.safetensors", (d / "model.sha256").read_text().split()[0]


def _load_generator_styles(weights: Path | None) -> nn.Module:
    from presenter.export.generator import GeneratorStyles

    return GeneratorStyles(_load_generator(weights)).eval()


def _trace_generator(module: nn.Module, path: Path, opset: int) -> Path:
    from presenter.export.generator import export_generator_onnx

    return export_generator_onnx(module, path, opset=opset)


def _trace_generator_styles(module: nn.Module, path: Path, opset: int) -> Path:
    from presenter.export.generator import export_styles_onnx

    return export_styles_onnx(module.model, path, opset=opset)


def _example_generator(module: nn.Module, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    S, N = module.cfg.crop_px, module.style_width
    return {"target": rng.uniform(-1, 1, (batch, 3, S, S)).astype(np.float32),
            "mask": rng.uniform(0, 1, (batch, 1, S, S)).astype(np.float32),
            "guidance": rng.uniform(0, 1, (batch, 4, S, S)).astype(np.float32),
            "styles": rng.normal(1, 0.1, (batch, N)).astype(np.float32)}


def _example_generator_styles(module: nn.Module, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"reference": rng.uniform(-1, 1, (batch, 3, 128, 128)).astype(np.float32)}


BATCH = (1, 8, 64)
NETWORKS: dict[str, Network] = {n.name: n for n in (
    Network("syncformer", "Style-SyncFormer streaming step (33 feature frames -> mesh displacements)", "frame",
            ("features", "style"), ("displacement",), {"batch": BATCH, "frames": (1, 33, 128)},
            _load_step, _lipsync_source, _trace_step, _example_step),
    Network("style-encoder", "SyncFormer style encoder (reference clip displacements -> style code)", "reference clip",
            ("reference",), ("style",), {"batch": (1, 1, 8), "frames": (1, 50, 750)},
            lambda w: _lipsync(w).style.eval(), _lipsync_source, _trace_style, _example_style),
    Network("whisper", "Whisper tiny.en speech encoder (1 s log-mel window -> 50 feature frames)", "frame",
            ("mel",), ("features",), {"batch": BATCH, "mel_frames": (2, 100, 3000), "frames": (1, 50, 1500)},
            _load_whisper, _whisper_source, _trace_whisper, _example_whisper),
    Network("generator", "rewired generator, per-frame graph (128 px mouth window)", "frame",
            ("target", "mask", "guidance", "styles"), ("image",), {"batch": BATCH},
            _load_generator, _generator_source, _trace_generator, _example_generator),
    Network("generator-styles", "generator reference encoder + style affines (reference frame -> styles)", "avatar",
            ("reference",), ("styles",), {"batch": (1, 1, 16)},
            _load_generator_styles, _generator_source, _trace_generator_styles, _example_generator_styles),
)}


def get_network(name: str) -> Network:
    """The network called name, or a UserError listing the known ones."""
    if name not in NETWORKS:
        raise UserError(f"unknown model {name!r}; choose one of: {', '.join(NETWORKS)} (or 'all')")
    return NETWORKS[name]


def onnx_io(path: Path) -> dict[str, list[dict[str, object]]]:
    """Inputs and outputs of an ONNX file: name, shape (ints, or the dynamic axis' name), element type."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values) -> list[dict[str, object]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out
    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def max_abs_error(net: Network, module: nn.Module, path: Path, feeds: Mapping[str, np.ndarray]) -> float:
    """Largest |ONNX Runtime - torch| over the outputs of one call on feeds."""
    import torch

    from presenter.engines.onnxruntime import session

    sess = session(path, 1)
    got = sess.run(list(net.outputs), dict(feeds))
    with torch.inference_mode():
        ref = module(*(torch.from_numpy(feeds[k]) for k in net.inputs))
    ref = ref if isinstance(ref, tuple) else (ref,)
    return max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))


def _writable_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"-o {out_dir}: cannot create the folder ({e.strerror}); choose a writable folder") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"-o {out_dir}: folder is not writable; choose a writable folder")
    return out_dir


def export_network(name: str, out_dir: Path, *, opset: int = OPSET, weights: Path | None = None,
                   fp16: bool = False, int8: bool = False) -> tuple[Path, Path]:
    """Export network name to out_dir/NAME.onnx and out_dir/NAME.meta.json; return both paths.

    The graph is traced to a temporary name, checked (onnx.checker, then ONNX Runtime against torch
    on a live-shaped batch of 2), and renamed; meta.json is written the same way after it. Raises
    UserError for an unknown name, an opset outside [MIN_OPSET, MAX_OPSET], --fp16/--int8 (see
    `precision_refusal`) or an unwritable folder.
    """
    import onnx
    import torch

    net = get_network(name)
    refusal = precision_refusal(fp16=fp16, int8=int8)
    if refusal:
        raise UserError(refusal)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"--opset {opset}: must be between {MIN_OPSET} and {MAX_OPSET} ({MAX_OPSET} is the newest "
                        f"that torch's TorchScript ONNX exporter writes)")
    out_dir = _writable_dir(out_dir)
    onnx_path, meta_path = out_dir / f"{name}.onnx", out_dir / f"{name}.meta.json"
    tmp = out_dir / f".{name}.onnx.{os.getpid()}.tmp"
    tmp_meta = out_dir / f".{name}.meta.json.{os.getpid()}.tmp"
    module = net.load(weights)                      # first: it says what is wrong with a weights folder
    source_path, source_sha = net.source(weights)
    try:
        net.trace(module, tmp, opset)
        onnx.checker.check_model(str(tmp), full_check=True)
        error = max_abs_error(net, module, tmp, net.example(module, 2, np.random.default_rng(0)))
        meta = {"model": name, "summary": net.summary, "format": "onnx", "opset": opset, "precision": "fp32",
                **onnx_io(tmp), "dynamic_axes": net.axes_meta(),
                "source_weights": {"path": str(source_path), "sha256": source_sha},
                "onnx_sha256": sha256_file(tmp), "parity": {"max_abs_error": error,
                                                            "input": "live-shaped example batch of 2, seed 0"},
                "torch": torch.__version__, "onnx": onnx.__version__}
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, onnx_path)
        os.replace(tmp_meta, meta_path)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    log.info("wrote %s (%s) and %s; ONNX Runtime vs torch max abs error %.2e",
             onnx_path, f"{onnx_path.stat().st_size / 1e6:.1f} MB", meta_path.name, error)
    return onnx_path, meta_path


def precision_refusal(*, fp16: bool, int8: bool) -> str | None:
    """Why --fp16 / --int8 ONNX graphs are not written (None when neither is asked)."""
    if fp16:
        return ("--fp16: not written: fp16 parity has not been measured. fp16 pays on GPUs and none was available to "
                "measure it; the only runtime installed here is ONNX Runtime's CPU provider. On a GPU, "
                "TensorRT builds fp16 from the fp32 graph with its FP16 flag (presenter.engines.tensorrt). Export fp32.")
    if int8:
        return INT8_REFUSAL
    return None


# Measured 2026-12-03 with onnxruntime.quantization.quantize_static (QDQ, int8 activations and
# weights), calibrated on real inputs: read speech (pocketsphinx-testdata) for the SyncFormer, the
# default avatar's speaking mouth windows for the generator; scored on other files of that speech.
INT8_REFUSAL = ("--int8: not written: parity does not hold where the speed is. Static int8 (ONNX Runtime QDQ, "
                "calibrated on real inputs, measured 2026-12-03): the generator ran slower than fp32 (9.6 vs 7.2 ms "
                "per frame, 1 thread) at 37-38 dB PSNR against "
                "fp32 (fp32 export: > 100 dB); the SyncFormer step (MatMul/Gemm only) was 1.24x faster (2.6 -> 2.1 ms) "
                "but moved lip vertices by up to 0.33 mm (fp32 export: 4e-6 mm), and the phonetic judge has not "
                "passed int8 mouths. Export fp32.")
