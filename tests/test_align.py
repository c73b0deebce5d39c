"""Alignment to the canonical crop, paste-back, and masks from the mesh."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.face.align import align_transform, crop, paste_back, similarity_2d, template, warp_points
from presenter.face.canonical import LIPS_OUTER, LEFT_EYE_UPPER
from presenter.face.fit import fit_face
from presenter.face.landmarker import FaceLandmarker
from presenter.face.masks import face_mask, mouth_mask

ROUND_TRIP_MAE = 2.0  # grey levels (of 255) inside the pasted region: two bilinear resamplings, nothing else


@pytest.fixture(scope="module")
def fitted(astronaut: np.ndarray):
    with FaceLandmarker("image") as lm:
        return fit_face(lm.detect(astronaut)[0])


def test_similarity_2d_recovers_transform() -> None:
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 100, (30, 2))
    ang, s = 0.3, 1.7
    m = np.array([[s * np.cos(ang), -s * np.sin(ang), 5.0], [s * np.sin(ang), s * np.cos(ang), -7.0]])
    np.testing.assert_allclose(similarity_2d(src, src @ m[:, :2].T + m[:, 2]), m, atol=1e-4)


@pytest.mark.parametrize("size", [128, 256])
def test_crop_puts_the_face_on_the_template(astronaut: np.ndarray, fitted, size: int) -> None:
    """Stable landmarks land within 2% of the crop side of the canonical template."""
    m = align_transform(fitted.verts_px, size)
    pts = warp_points(fitted.verts_px, m)[:, :2]
    from presenter.face.canonical import canonical_mesh
    ids = canonical_mesh().procrustes_ids
    assert np.abs(pts[ids] - template(size)[ids]).mean() < 0.02 * size
    assert crop(astronaut, m, size).shape == (size, size, 3)


def test_crop_then_paste_back_round_trip(astronaut: np.ndarray, fitted) -> None:
    """Pasting an unchanged 256 px crop back changes the frame by < 2 grey levels on average where
    the crop is fully blended in, and not at all outside the crop."""
    m = align_transform(fitted.verts_px, 256)
    back = paste_back(astronaut, crop(astronaut, m, 256), m)
    inv_full = paste_back(np.zeros_like(astronaut), np.full((256, 256, 3), 255, np.uint8), m)[..., 0]
    inside, outside = inv_full >= 250, inv_full == 0
    err = np.abs(back.astype(np.int16) - astronaut)
    assert err[inside].mean() < ROUND_TRIP_MAE, err[inside].mean()
    assert err[outside].max() == 0


def test_paste_back_of_a_changed_crop_shows_up_only_inside(astronaut: np.ndarray, fitted) -> None:
    m = align_transform(fitted.verts_px, 128)
    grey = np.full((128, 128, 3), 128, np.uint8)
    out = paste_back(astronaut, grey, m)
    centre = warp_points(np.array([[64.0, 64.0]]), __import__("cv2").invertAffineTransform(m))[0].astype(int)
    assert np.abs(out[centre[1], centre[0]].astype(int) - 128).max() <= 1
    assert (out[0, 0] == astronaut[0, 0]).all()


def test_masks_cover_the_right_parts(fitted) -> None:
    """The mouth mask covers the lips and not the eyes; the face mask covers both."""
    size = 256
    v = warp_points(fitted.verts_px, align_transform(fitted.verts_px, size))
    mm, fm = mouth_mask(v, size), face_mask(v, size)
    lips = np.round(v[list(LIPS_OUTER), :2]).astype(int)
    eyes = np.round(v[list(LEFT_EYE_UPPER), :2]).astype(int)
    assert mm[lips[:, 1], lips[:, 0]].min() > 0.9
    assert mm[eyes[:, 1], eyes[:, 0]].max() < 0.1
    assert fm[lips[:, 1], lips[:, 0]].min() > 0.9 and fm[eyes[:, 1], eyes[:, 0]].min() > 0.9
    # The mouth mask reaches below the chin, where an opened jaw goes.
    chin = np.round(v[152, :2]).astype(int)
    assert mm[chin[1] + 5, chin[0]] > 0.5
