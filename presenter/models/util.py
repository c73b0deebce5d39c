"""Small helpers shared by the networks."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

from torch import Tensor

from presenter.errors import UserError

C = TypeVar("C")


def assert_shape(x: Tensor, shape: Sequence[int | None]) -> Tensor:
    """Check x's shape against `shape` (None = any size) and return x."""
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        raise AssertionError(f"expected shape {tuple(shape)}, got {tuple(x.shape)}")
    return x


def config_from_json(cls: type[C], path: Path, fix: str) -> C:
    """A frozen config dataclass from its config.json (lists become tuples); an unreadable file or an
    unknown or missing key is a UserError naming the file, the key and `fix` (what to do)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read the config ({e}); {fix}") from None
    known = {f.name for f in fields(cls)}
    unknown, missing = sorted(set(raw) - known), sorted(known - set(raw))
    if unknown:
        raise UserError(f"{path}: unknown key(s) {unknown} for {cls.__name__}; {fix}")
    if missing:
        raise UserError(f"{path}: missing key(s) {missing} for {cls.__name__}; {fix}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
