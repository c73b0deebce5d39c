"""TensorRT engine: a plan built from the ONNX graph with the `tensorrt` Python API (TensorRT 10),
fp16, cached on disk, run with its I/O buffers allocated and bound once.

Not run in this project: no machine here has TensorRT (DESIGN.md section 6). The CPU-side logic
is tested (tests/test_engines.py): the plan cache key, the shape profiles built from the graph's
meta.json, and the binding layout; the GPU test skips with its reason.

- Plan cache: $PRESENTER_HOME/engines/tensorrt/NETWORK-KEY.plan, KEY = sha256 over the GPU name,
  the TensorRT version, the ONNX file's sha256, the precision and the shape profiles. A plan is
  only valid for the GPU model and TensorRT build that made it; any change builds a new one.
- Shape profiles: one optimisation profile whose (min, opt, max) per input come from the
  network's dynamic axes ranges (meta.json "dynamic_axes": batch, frames, ...).
- Bindings: one device arena holds every input and output at its profile's max shape, each at a
  256-byte aligned offset; tensor addresses are set once at load. A call copies inputs into the
  front of their slots, sets the input shapes, and reads outputs from the front of theirs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from presenter.errors import UserError
from presenter.paths import home

if TYPE_CHECKING:
    from presenter.export.registry import Network

log = logging.getLogger(__name__)

ALIGN_BYTES = 256          # CUDA allocations are 256-byte aligned; keep every slot so
WORKSPACE_BYTES = 1 << 30  # builder scratch memory limit
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Binding:
    """One I/O tensor's slot in the device arena."""
    name: str
    is_input: bool
    max_shape: Shape
    dtype: str            # numpy dtype name
    offset: int           # bytes from the arena's start, ALIGN_BYTES aligned
    nbytes: int           # bytes at max_shape


def profile_shapes(meta: Mapping) -> dict[str, tuple[Shape, Shape, Shape]]:
    """Input name -> (min, opt, max) shapes: named axes take their meta["dynamic_axes"] range, fixed ones their size."""
    ranges = meta["dynamic_axes"]
    out = {}
    for t in meta["inputs"]:
        shapes = []
        for which in ("min", "opt", "max"):
            shapes.append(tuple(int(ranges[d][which]) if isinstance(d, str) else int(d) for d in t["shape"]))
        out[t["name"]] = tuple(shapes)
    return out


def _max_shape(shape: list, ranges: Mapping) -> Shape:
    missing = [d for d in shape if isinstance(d, str) and d not in ranges]
    if missing:
        raise ValueError(f"dynamic axis {missing[0]!r} has no range in meta.json 'dynamic_axes'; add (min, opt, max)")
    return tuple(int(ranges[d]["max"]) if isinstance(d, str) else int(d) for d in shape)


def binding_layout(meta: Mapping) -> list[Binding]:
    """Inputs then outputs, in graph order, packed into one arena at their max shapes."""
    ranges, layout, offset = meta["dynamic_axes"], [], 0
    for is_input, key in ((True, "inputs"), (False, "outputs")):
        for t in meta[key]:
            shape = _max_shape(t["shape"], ranges)
            nbytes = math.prod(shape) * np.dtype(t["dtype"]).itemsize
            layout.append(Binding(t["name"], is_input, shape, t["dtype"], offset, nbytes))
            offset += -(-nbytes // ALIGN_BYTES) * ALIGN_BYTES
    return layout


def arena_bytes(layout: list[Binding]) -> int:
    last = max(layout, key=lambda b: b.offset)
    return last.offset + -(-last.nbytes // ALIGN_BYTES) * ALIGN_BYTES


def plan_cache_key(*, gpu_name: str, trt_version: str, onnx_sha256: str, fp16: bool,
                   profiles: Mapping[str, tuple[Shape, Shape, Shape]]) -> str:
    """sha256 (hex) of everything a plan depends on; any change names a different plan file."""
    blob = json.dumps({"gpu": gpu_name, "tensorrt": trt_version, "onnx": onnx_sha256, "fp16": fp16,
                       "profiles": {k: [list(s) for s in v] for k, v in sorted(profiles.items())}}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_path(network: str, key: str, cache_dir: Path | None = None) -> Path:
    return (Path(cache_dir) if cache_dir else home() / "engines" / "tensorrt") / f"{network}-{key[:16]}.plan"


def check_within_profile(name: str, shape: Shape, profile: tuple[Shape, Shape, Shape]) -> None:
    """ValueError naming the input, its shape and the allowed range when shape is outside the profile."""
    lo, _, hi = profile
    if len(shape) != len(lo) or any(not a <= s <= b for s, a, b in zip(shape, lo, hi)):
        raise ValueError(f"input {name!r} has shape {tuple(shape)}; this plan takes {lo} to {hi}")


def build_plan(onnx_path: Path, profiles: Mapping[str, tuple[Shape, Shape, Shape]], *, fp16: bool = True) -> bytes:
    """A serialized TensorRT plan for the ONNX graph with one optimisation profile (builds on this GPU)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)                 # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build a plan for {onnx_path}")
    return bytes(plan)


class TensorRTEngine:
    """One network as a TensorRT plan on a CUDA device; see the module docstring."""

    backend = "tensorrt"

    def __init__(self, onnx_path: Path, meta: Mapping, *, fp16: bool = True, cache_dir: Path | None = None,
                 device: int = 0) -> None:
        self.onnx_path, self.meta, self.fp16, self.device = Path(onnx_path), dict(meta), fp16, device
        self.cache_dir = cache_dir
        self.profiles = profile_shapes(self.meta)
        self.layout = binding_layout(self.meta)
        self.plan: Path | None = None
        self._context = None

    @classmethod
    def for_network(cls, net: "Network", *, weights: Path | None = None, fp16: bool = True) -> "TensorRTEngine":
        from presenter.engines.onnxruntime import network_graph
        from presenter.export.registry import onnx_io, sha256_file

        path = network_graph(net, weights)
        meta = {"model": net.name, **onnx_io(path), "onnx_sha256": sha256_file(path),
                "dynamic_axes": net.axes_meta()}
        return cls(path, meta, fp16=fp16)

    def load(self) -> None:
        if self._context is not None:
            return
        import tensorrt as trt
        import torch

        if not torch.cuda.is_available():
            raise UserError("--backend tensorrt needs a CUDA GPU; none is visible (use --backend onnxruntime)")
        gpu = torch.cuda.get_device_name(self.device)
        key = plan_cache_key(gpu_name=gpu, trt_version=trt.__version__, onnx_sha256=self.meta["onnx_sha256"],
                             fp16=self.fp16, profiles=self.profiles)
        self.plan = plan_path(self.meta["model"], key, self.cache_dir)
        if not self.plan.is_file():
            log.info("building the TensorRT plan %s on %s (first use of this graph on this GPU)", self.plan, gpu)
            self.plan.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.plan.with_name(f".{self.plan.name}.{os.getpid()}.tmp")
            tmp.write_bytes(build_plan(self.onnx_path, self.profiles, fp16=self.fp16))
            os.replace(tmp, self.plan)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.plan.read_bytes())
        context = self._engine.create_execution_context()
        self._arena = torch.empty(arena_bytes(self.layout), dtype=torch.uint8, device=f"cuda:{self.device}")
        for b in self.layout:
            context.set_tensor_address(b.name, self._arena.data_ptr() + b.offset)
        self._stream = torch.cuda.Stream(device=self.device)
        self._context = context

    def _slot(self, b: Binding, shape: Shape):
        import torch

        n = math.prod(shape) * np.dtype(b.dtype).itemsize
        return self._arena[b.offset:b.offset + n].view(getattr(torch, b.dtype)).view(shape)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        self.load()
        with torch.cuda.stream(self._stream):
            for b in self.layout:
                if b.is_input:
                    x = np.ascontiguousarray(feeds[b.name], b.dtype)
                    check_within_profile(b.name, x.shape, self.profiles[b.name])
                    self._slot(b, x.shape).copy_(torch.from_numpy(x))
                    self._context.set_input_shape(b.name, x.shape)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for {self.meta['model']}")
            out = {b.name: self._slot(b, tuple(self._context.get_tensor_shape(b.name))).cpu().numpy()
                   for b in self.layout if not b.is_input}
        self._stream.synchronize()
        return out

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "network": self.meta["model"], "precision": "fp16" if self.fp16 else "fp32",
                "graph": str(self.onnx_path), "plan": str(self.plan) if self.plan else None,
                "profiles": {k: [list(s) for s in v] for k, v in self.profiles.items()},
                "arena_bytes": arena_bytes(self.layout)}
