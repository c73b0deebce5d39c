"""The `Engine` protocol: one network behind load / run(named arrays) / describe, whatever runs it.

Backends: torch (the reference), onnxruntime (CPU; CUDA provider when present), tensorrt (a plan
built from the ONNX graph on the GPU that runs it). `open_engine(network, backend)` makes one for
a network of `presenter.export.registry`; backend "auto" picks the fastest measured on this
machine by `presenter bench networks` (recorded in $PRESENTER_HOME/engines/bench-networks.json),
and without a measurement ONNX Runtime when it is installed (it measured faster than torch for
every network here, docs/performance.md), else torch.
"""
from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from presenter.errors import UserError
from presenter.paths import home

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
CHOICES = ("auto", *BACKENDS)


@runtime_checkable
class Engine(Protocol):
    """One network on one backend. run() takes and returns float32 arrays by the network's tensor names."""

    backend: str

    def load(self) -> None:
        """Build or read what run() needs (module, session, plan); idempotent."""

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Named inputs -> named outputs, batch first."""

    def describe(self) -> dict[str, object]:
        """What runs: backend, network, device, threads, precision, graph file."""


def measurements_path() -> Path:
    return home() / "engines" / "bench-networks.json"


def machine_id(threads: int) -> str:
    """Which measurements apply: this CPU model and the thread count."""
    return f"{platform.machine()}|{cpu_model()}|threads={threads}"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def available_backends() -> list[str]:
    """Backends whose runtime imports here (tensorrt also needs a CUDA device)."""
    import importlib.util

    have = ["torch"] if importlib.util.find_spec("torch") else []
    if importlib.util.find_spec("onnxruntime"):
        have.append("onnxruntime")
    if importlib.util.find_spec("tensorrt"):
        import torch

        if torch.cuda.is_available():
            have.append("tensorrt")
    return have


def resolve_backend(backend: str, network: str, *, threads: int = 1) -> str:
    """A concrete backend for network: backend itself, or for "auto" the fastest batch-1 p50 measured
    on this machine at this thread count among those available, else ONNX Runtime, else torch."""
    if backend not in CHOICES:
        raise UserError(f"--backend {backend}: choose one of {', '.join(CHOICES)}")
    have = available_backends()
    if backend != "auto":
        if backend not in have:
            raise UserError(f"--backend {backend}: not available here (available: {', '.join(have)}); "
                            f"install its extra (pip install 'presenter[{'tensorrt' if backend == 'tensorrt' else 'onnx'}]') "
                            f"or use --backend auto")
        return backend
    path = measurements_path()
    if path.is_file():
        rows = json.loads(path.read_text()).get(machine_id(threads), {}).get(network, {})
        timed = {b: ms for b, ms in rows.items() if b in have}
        if timed:
            return min(timed, key=timed.get)
    return "onnxruntime" if "onnxruntime" in have else "torch"


def record_measurements(p50_ms: Mapping[str, Mapping[str, float]], *, threads: int) -> Path:
    """Store batch-1 p50 (network -> backend -> ms) for "auto", merged with earlier runs; atomic."""
    import os

    path = measurements_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {}
    mine = data.setdefault(machine_id(threads), {})
    for network, by_backend in p50_ms.items():
        mine.setdefault(network, {}).update({b: float(ms) for b, ms in by_backend.items()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def open_engine(network: str, backend: str = "auto", *, threads: int = 1, weights: Path | None = None) -> Engine:
    """A loaded engine for a network of presenter.export.registry on the chosen backend."""
    from presenter.export.registry import get_network

    net = get_network(network)
    chosen = resolve_backend(backend, net.name, threads=threads)
    if chosen == "torch":
        from presenter.engines.torch_engine import TorchEngine

        engine: Engine = TorchEngine(net, weights=weights, threads=threads)
    elif chosen == "onnxruntime":
        from presenter.engines.onnxruntime import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine.for_network(net, weights=weights, threads=threads)
    else:
        from presenter.engines.tensorrt import TensorRTEngine

        engine = TensorRTEngine.for_network(net, weights=weights)
    engine.load()
    log.info("%s on %s (asked: %s)", net.name, chosen, backend)
    return engine
