"""`presenter swap`: refused without a consent statement, and (until a whole-face generator exists)
refused with what is missing; either way exit 2 and nothing written."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from presenter.cli import main

CONSENT = "Eileen Collins (public-domain NASA portrait) and the test's own video; test use only"


@pytest.fixture()
def inputs(tmp_path: Path, astronaut: np.ndarray) -> tuple[Path, Path]:
    """The astronaut portrait as the source and a 1 s video of it as the target."""
    import av

    src = tmp_path / "source.png"
    cv2.imwrite(str(src), astronaut[..., ::-1])
    target = tmp_path / "target.mp4"
    with av.open(str(target), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        frame = cv2.resize(astronaut, (256, 256))
        for _ in range(25):
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(s.encode(None))
    return src, target


def _swap(args: list[str], out: Path, capsys: pytest.CaptureFixture) -> str:
    before = set(out.parent.iterdir())
    assert main(["swap", *args, "-o", str(out)]) == 2
    assert set(out.parent.iterdir()) == before, "a refused swap left files behind"
    return capsys.readouterr().err


@pytest.mark.parametrize("consent", [None, "", "   ", "yes"])
def test_swap_without_a_consent_statement_is_refused(inputs, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     consent: str | None) -> None:
    src, target = inputs
    args = ["--source", str(src), "--target", str(target)] + ([] if consent is None else ["--consent", consent])
    err = _swap(args, tmp_path / "out.mp4", capsys)
    assert "--consent" in err


def test_swap_checks_its_inputs(inputs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, target = inputs
    assert "is an image" in _swap(["--source", str(src), "--target", str(src), "--consent", CONSENT],
                                  tmp_path / "out.mp4", capsys)
    assert "does not exist" in _swap(["--source", str(tmp_path / "nobody.png"), "--target", str(target),
                                      "--consent", CONSENT], tmp_path / "out.mp4", capsys)
    (tmp_path / "out.mp4").write_bytes(b"keep")
    assert "already exists" in _swap(["--source", str(src), "--target", str(target), "--consent", CONSENT],
                                     tmp_path / "out.mp4", capsys)


def test_swap_says_a_whole_face_generator_is_needed(inputs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With consent and good inputs, the mouth-only renderers are not passed off as a face swap."""
    src, target = inputs
    err = _swap(["--source", str(src), "--target", str(target), "--consent", CONSENT], tmp_path / "out.mp4", capsys)
    assert "whole-face generator" in err and "Nothing was written" in err
