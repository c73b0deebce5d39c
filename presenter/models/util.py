"""Small helpers shared by the networks."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor


def assert_shape(x: Tensor, shape: Sequence[int | None]) -> Tensor:
    """Check x's shape against `shape` (None = any size) and return x."""
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise AssertionError(f"expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return x
