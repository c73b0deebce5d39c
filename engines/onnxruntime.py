"""ONNX Runtime engine: exported graphs in $PRESENTER_HOME/engines, run with a fixed thread count.

`OnnxRuntimeEngine` is the `Engine` (presenter.engines.base) for a network of the export
registry: CPU provider, or CUDA first when onnxruntime-gpu offers it.

Exports are made on first use from the shipped weights (nothing downloads), written to a
temporary file and renamed, and keyed by the weights' hash so a new model never loads a stale
graph. `impl="ref"` in callers stays the PyTorch module; tests compare the two.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from presenter.paths import home

if TYPE_CHECKING:
    from presenter.export.registry import Network

log = logging.getLogger(__name__)


def session(path: Path | bytes, threads: int = 1, *, providers: Sequence[str] = ("CPUExecutionProvider",)):
    """An onnxruntime InferenceSession of a graph file (or serialized graph bytes), on the CPU unless
    providers say otherwise, with `threads` intra-op threads and no inter-op pool."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts, providers=list(providers))


def cached_export(name: str, key: str, export: Callable[[Path], object]) -> Path:
    """The graph `name` for weights `key`, exported once by `export(tmp_path)` into the engine cache."""
    d = home() / "engines"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}-{key}.onnx"
    if not path.is_file():
        log.info("exporting %s to %s (first use only)", name, path)
        tmp = d / f".{path.name}.{os.getpid()}.tmp"
        export(tmp)
        os.replace(tmp, path)
    return path


@lru_cache(maxsize=2)
def whisper_encode(threads: int = 1, precision: str = "fp32") -> Callable[[np.ndarray], np.ndarray]:
    """The tiny.en encoder under ONNX Runtime as an `Encode` callable: log-mel (B, 80, T) -> (B, T/2, 384).

    precision "int8": ONNX Runtime's dynamic quantisation of the fp32 graph (int8 weights, activations
    quantised per call), made once into the engine cache. About 40 % less CPU per window here; its
    effect on the lips is measured in docs/live.md (`presenter bench live --encoder int8`)."""
    from presenter.audio.whisper import export_onnx, load_encoder, model_dir

    if precision not in ENCODER_PRECISIONS:
        raise ValueError(f"precision must be one of {ENCODER_PRECISIONS}, got {precision!r}")
    weights = model_dir() / "model.bin"
    stat = weights.stat()
    key = hashlib.sha256(f"{stat.st_size}-tiny.en-v1".encode()).hexdigest()[:10]
    path = cached_export("whisper-tiny-en-encoder", key, lambda p: export_onnx(load_encoder(), p))
    if precision == "int8":
        path = cached_export("whisper-tiny-en-encoder-int8", key, lambda p: _quantize(path, p))
    sess = session(path, threads)

    def encode(mel: np.ndarray) -> np.ndarray:
        return sess.run(None, {"mel": np.ascontiguousarray(mel, np.float32)})[0]
    return encode


ENCODER_PRECISIONS = ("fp32", "int8")


def _quantize(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)


def network_graph(net: "Network", weights: Path | None = None) -> Path:
    """The registry network's ONNX graph in the engine cache, keyed by its weights' sha256 and the opset."""
    from presenter.export.graph import OPSET

    _, sha = net.source(weights)
    key = hashlib.sha256(f"{sha}-opset{OPSET}".encode()).hexdigest()[:12]
    return cached_export(net.name, key, lambda p: net.trace(net.load(weights), p, OPSET))


class OnnxRuntimeEngine:
    """A registry network (or any graph with its input/output names) in an ONNX Runtime session."""

    backend = "onnxruntime"

    def __init__(self, path: Path, *, network: str, inputs: Sequence[str], outputs: Sequence[str],
                 threads: int = 1) -> None:
        self.path, self.network, self.threads = Path(path), network, threads
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self._session = None

    @classmethod
    def for_network(cls, net: "Network", *, weights: Path | None = None, threads: int = 1) -> "OnnxRuntimeEngine":
        return cls(network_graph(net, weights), network=net.name, inputs=net.inputs, outputs=net.outputs,
                   threads=threads)

    def load(self) -> None:
        if self._session is None:
            import onnxruntime as ort

            cuda = "CUDAExecutionProvider" in ort.get_available_providers()
            self._session = session(self.path, self.threads, providers=(("CUDAExecutionProvider",) if cuda else ())
                                    + ("CPUExecutionProvider",))

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        out = self._session.run(list(self.outputs), {k: np.ascontiguousarray(feeds[k], np.float32) for k in self.inputs})
        return dict(zip(self.outputs, out))

    def describe(self) -> dict[str, object]:
        import onnxruntime as ort

        self.load()
        return {"backend": self.backend, "network": self.network, "providers": self._session.get_providers(),
                "threads": self.threads, "precision": "fp32", "graph": str(self.path), "onnxruntime": ort.__version__}
