"""The torch engine: the network's PyTorch module itself, the reference every other backend is checked against."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from presenter.export.registry import Network


class TorchEngine:
    """Runs a registry network's module under inference_mode on `device` (cpu, or cuda when present)."""

    backend = "torch"

    def __init__(self, net: Network, *, weights: Path | None = None, threads: int = 1, device: str = "cpu") -> None:
        """threads: torch intra-op threads, set process-wide by load() (torch has no per-module setting)."""
        self.net, self.weights, self.threads, self.device = net, weights, threads, torch.device(device)
        self.module: torch.nn.Module | None = None

    def load(self) -> None:
        if self.module is None:
            torch.set_num_threads(self.threads)
            self.module = self.net.load(self.weights).to(self.device).eval()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.load()
        args = [torch.from_numpy(np.ascontiguousarray(feeds[k], np.float32)).to(self.device) for k in self.net.inputs]
        with torch.inference_mode():
            out = self.module(*args)
        out = out if isinstance(out, tuple) else (out,)
        return {k: v.float().cpu().numpy() for k, v in zip(self.net.outputs, out)}

    def describe(self) -> dict[str, object]:
        return {"backend": self.backend, "network": self.net.name, "device": str(self.device),
                "threads": self.threads, "precision": "fp32", "torch": torch.__version__}
