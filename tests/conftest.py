"""Shared fixtures: real portraits that ship in packages, and one avatar pack per test session."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's public-domain NASA portrait, (512, 512, 3) uint8 RGB."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def hopper() -> np.ndarray:
    """matplotlib's public-domain portrait of Grace Hopper, RGB uint8."""
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


@pytest.fixture(scope="session")
def astronaut_pack(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> Path:
    """An avatar pack made from the astronaut portrait through the public CLI path."""
    import cv2

    from presenter.cli import main

    d = tmp_path_factory.mktemp("pack")
    src = d / "astronaut.png"
    cv2.imwrite(str(src), astronaut[..., ::-1])
    assert main(["avatar", "create", "--image", str(src), "-o", str(d / "astronaut")]) == 0
    return d / "astronaut"
