"""The renderer seam: every way of drawing the presenter implements `Renderer`.

The live stream and the offline tools hold a Renderer and call `render(index, mouth)` once per
output frame; the baseline warp renderer serves now, the trained generator drops in later.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


class Renderer(Protocol):
    name: str      # shown to users and in metrics, e.g. "baseline warp (no learning)"
    synthetic_label: str  # short label drawn on frames that carry a rendered mouth

    def render(self, index: int, mouth: np.ndarray | None) -> np.ndarray:
        """Idle-loop frame `index` (taken modulo the loop) with the mouth pose (P,) or, for None,
        the idle frame as it is -> RGB frame (H, W, 3) uint8. Thread-safe for concurrent calls."""
        ...
