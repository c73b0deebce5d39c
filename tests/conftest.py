"""Shared fixtures: real portraits that ship in packages, and one avatar pack per test session."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: on 2 shared cores, 2 torch threads beside another busy process ran 4x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


# --- live presenter (tests/test_stream.py, test_server.py, test_browser.py) --------------------

@pytest.fixture(scope="session")
def live_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh $PRESENTER_HOME for the live tests (the default avatar is made in it once)."""
    return tmp_path_factory.mktemp("presenter_home")


@pytest.fixture(scope="session")
def live_pipeline(live_home: Path):
    """The default avatar's live pipeline as a user gets it (--engine auto: the shipped SyncFormer),
    made in live_home."""
    from presenter.stream.pipeline import load_pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRESENTER_HOME", str(live_home))
        return load_pipeline("default", "auto")


@pytest.fixture(scope="session")
def baseline_pipeline(live_home: Path):
    """The default avatar with the loudness driver and the warp renderer: cheap and deterministic, so
    tests of the stream's and the server's own behaviour (clock, audio, program, signalling, clean-up)
    do not depend on how fast a learned model runs on a busy machine. (With the generator renderer,
    under `stress-ng --cpu 2` the first phrase of a call could pass on reused frames before the
    overload fallback took over.) The learned path has its own tests (`live_pipeline`)."""
    from presenter.stream.pipeline import load_pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRESENTER_HOME", str(live_home))
        return load_pipeline("default", "baseline", "baseline")


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory):
    """A 48 kHz mono 16-bit WAV of three short espeak-ng phrases, each after 0.9 s of silence.

    -> SpeechWav(path, samples (n,) float32, rate, speech [(start_s, end_s), ...])."""
    import shutil
    from dataclasses import dataclass

    from presenter.audio.io import write_wav
    from presenter.server.client import speech_phrases

    @dataclass(frozen=True)
    class SpeechWav:
        path: Path
        samples: np.ndarray
        rate: int
        speech: tuple[tuple[float, float], ...]

        @property
        def duration_s(self) -> float:
            return len(self.samples) / self.rate

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    rate = 48000
    samples, speech = speech_phrases(rate=rate)
    path = tmp_path_factory.mktemp("speech") / "speech48k.wav"
    write_wav(path, samples, rate)
    return SpeechWav(path, samples, rate, tuple(speech))
