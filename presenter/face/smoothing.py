"""One-Euro filter (Casiez et al., CHI 2012) for landmark tracks.

Low cutoff when still (kills jitter), higher cutoff as speed rises (keeps fast mouth motion
from lagging). Vectorised: one filter state per array element.
"""
from __future__ import annotations

import math

import numpy as np


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Filters a stream of equally shaped arrays, e.g. landmarks (L, 3) in pixels.

    min_cutoff_hz: cutoff at rest (lower = smoother, more lag when moving slowly).
    beta: how fast the cutoff rises with speed (units: Hz per (unit/s)).
    d_cutoff_hz: cutoff of the speed estimate itself.
    """

    def __init__(self, *, min_cutoff_hz: float = 1.0, beta: float = 0.05, d_cutoff_hz: float = 1.0) -> None:
        self.min_cutoff_hz, self.beta, self.d_cutoff_hz = min_cutoff_hz, beta, d_cutoff_hz
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def __call__(self, x: np.ndarray, dt_s: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dx = (x - self._x) / dt_s
        self._dx = self._dx + _alpha(self.d_cutoff_hz, dt_s) * (dx - self._dx)
        cutoff = self.min_cutoff_hz + self.beta * np.abs(self._dx)
        self._x = self._x + _alpha(cutoff, dt_s) * (x - self._x)
        return self._x.astype(np.float32)
