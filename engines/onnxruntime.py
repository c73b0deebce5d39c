"""ONNX Runtime engine: exported graphs in $PRESENTER_HOME/engines, run with a fixed thread count.

Exports are made on first use from the shipped weights (nothing downloads), written to a
temporary file and renamed, and keyed by the weights' hash so a new model never loads a stale
graph. `impl="ref"` in callers stays the PyTorch module; tests compare the two.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from presenter.paths import home

log = logging.getLogger(__name__)


def session(path: Path, threads: int = 1):
    """An onnxruntime InferenceSession on the CPU with `threads` intra-op threads and no inter-op pool."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


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
def whisper_encode(threads: int = 1) -> Callable[[np.ndarray], np.ndarray]:
    """The tiny.en encoder under ONNX Runtime as an `Encode` callable: log-mel (B, 80, T) -> (B, T/2, 384)."""
    from presenter.audio.whisper import export_onnx, load_encoder, model_dir

    weights = model_dir() / "model.bin"
    stat = weights.stat()
    key = hashlib.sha256(f"{stat.st_size}-tiny.en-v1".encode()).hexdigest()[:10]
    path = cached_export("whisper-tiny-en-encoder", key, lambda p: export_onnx(load_encoder(), p))
    sess = session(path, threads)

    def encode(mel: np.ndarray) -> np.ndarray:
        return sess.run(None, {"mel": np.ascontiguousarray(mel, np.float32)})[0]
    return encode
