"""Mesh guidance image: the canonical face drawn into a crop, channel by channel."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from presenter.face.canonical import FACE_OVAL, NOSE_TIP, canonical_mesh
from presenter.face.guidance import GUIDANCE_CHANNELS, render_guidance

SIZE = 128
U, V, SHADE, COVERAGE = range(GUIDANCE_CHANNELS)


def frontal_face_px(*, yaw_deg: float = 0.0) -> np.ndarray:
    """Canonical mesh turned by yaw_deg about the vertical axis (positive turns the face towards
    image-right), scaled into the crop: (468, 3) px, x right, y down, larger z nearer."""
    v = canonical_mesh().vertices.astype(np.float64)
    a = np.deg2rad(yaw_deg)
    x = v[:, 0] * np.cos(a) + v[:, 2] * np.sin(a)
    z = -v[:, 0] * np.sin(a) + v[:, 2] * np.cos(a)
    scale = 0.9 * SIZE / np.ptp(v[:, 1])
    return np.stack([SIZE / 2 + scale * x, SIZE / 2 - scale * v[:, 1], scale * z], axis=1)


def pixel_of(p: np.ndarray) -> tuple[int, int]:
    """(row, col) of the pixel containing point p = (x, y, ...)."""
    return int(p[1]), int(p[0])


def test_coverage_matches_face_oval_polygon() -> None:
    """The coverage channel is the filled face oval (IoU >= 0.9) and is exactly 0 or 1."""
    verts = frontal_face_px()
    g = render_guidance(verts, SIZE)
    assert g.shape == (SIZE, SIZE, GUIDANCE_CHANNELS) and g.dtype == np.float32
    assert set(np.unique(g[..., COVERAGE])) == {0.0, 1.0}
    oval = np.zeros((SIZE, SIZE), dtype=np.uint8)
    pts = np.round((verts[list(FACE_OVAL), :2] - 0.5) * 16).astype(np.int32)   # 4 fractional bits; pixel centres at +0.5
    cv2.fillPoly(oval, [pts], 1, shift=4)
    covered, oval = g[..., COVERAGE] > 0, oval > 0
    iou = (covered & oval).sum() / (covered | oval).sum()
    assert iou >= 0.9, f"coverage vs face oval IoU {iou:.3f}"


def test_channels_are_zero_off_the_face_and_in_unit_range() -> None:
    """Every channel is 0 where the face is not drawn, and all values lie in [0, 1]."""
    g = render_guidance(frontal_face_px(), SIZE)
    assert np.all(g[g[..., COVERAGE] == 0] == 0)
    assert g.min() >= 0.0 and g.max() <= 1.0


def test_u_increases_left_to_right_along_the_nose_line() -> None:
    """Along the row through the nose tip, u rises (almost) monotonically from the left cheek
    (~0) to the right cheek (~1): the uv code tells which point of the face a pixel shows."""
    verts = frontal_face_px()
    g = render_guidance(verts, SIZE)
    row, _ = pixel_of(verts[NOSE_TIP])
    u = g[row, :, U][g[row, :, COVERAGE] > 0]
    assert u[0] < 0.1 and u[-1] > 0.9
    assert np.mean(np.diff(u) >= 0) > 0.95
    col_u = np.interp(0.5, u, np.arange(len(u)))                 # where u crosses the midline
    assert abs(col_u - len(u) / 2) < 2


def test_v_increases_from_forehead_to_chin() -> None:
    """Down the image's middle column, v rises from the forehead to the chin."""
    g = render_guidance(frontal_face_px(), SIZE)
    v = g[:, SIZE // 2, V][g[:, SIZE // 2, COVERAGE] > 0]
    assert v[0] < 0.15 and v[-1] > 0.9
    assert np.mean(np.diff(v) >= 0) > 0.95


def test_shading_bright_where_the_face_looks_at_the_camera() -> None:
    """Lambert shading with the light on the view axis: bright on the nose tip and forehead,
    which face the camera, dark at the oval's sides, which face sideways."""
    verts = frontal_face_px()
    g = render_guidance(verts, SIZE)
    shade = g[..., SHADE]
    assert shade[pixel_of(verts[NOSE_TIP])] > 0.85
    assert shade[pixel_of(verts[10])] > 0.85                     # forehead top
    for side in (234, 454):                                      # oval, at eye height
        p = verts[side] + [2.0 if side == 234 else -2.0, 0.0, 0.0]   # 2 px inside the face
        assert shade[pixel_of(p)] < 0.4
    assert np.median(shade[g[..., COVERAGE] > 0]) > 0.6


def test_shading_follows_a_head_turn() -> None:
    """Turning the head brightens the cheek that turns towards the camera and darkens the other:
    shading carries 3D pose that uv and coverage do not."""
    cheeks = (117, 346)                                          # image-left, image-right cheekbones
    for yaw, brighter in ((35.0, 0), (-35.0, 1)):
        verts = frontal_face_px(yaw_deg=yaw)
        g = render_guidance(verts, SIZE)
        s = [g[pixel_of(verts[k])][SHADE] for k in cheeks]
        assert s[brighter] > s[1 - brighter] + 0.2, f"yaw {yaw}: cheek shading {s}"


@pytest.mark.parametrize("yaw", [0.0, 40.0])
def test_fast_guidance_matches_reference(yaw: float) -> None:
    """The numba and numpy rasterisers give the same guidance image."""
    verts = frontal_face_px(yaw_deg=yaw)
    np.testing.assert_allclose(render_guidance(verts, SIZE, impl="fast"),
                               render_guidance(verts, SIZE, impl="ref"), rtol=0, atol=1e-5)


def test_open_mouth_is_a_hole_in_the_guidance() -> None:
    """Dropping the jaw by 1.5 cm widens the uncovered lip gap by about that much (9 px at 6 px/cm)."""
    from presenter.face.canonical import LOWER_INNER_LIP, UPPER_INNER_LIP, canonical_mesh
    from presenter.face.guidance import render_guidance

    v = canonical_mesh().vertices.astype(np.float64).copy()
    size = 128

    def to_crop(m: np.ndarray) -> np.ndarray:
        return np.stack([m[:, 0] * 6 + 64, -m[:, 1] * 6 + 60, m[:, 2] * 6], 1)

    def gap_pixels(m: np.ndarray) -> int:
        c = to_crop(m)
        x = int(c[UPPER_INNER_LIP, 0])
        y0, y1 = int(c[UPPER_INNER_LIP, 1]) + 1, int(c[LOWER_INNER_LIP, 1])
        return int((render_guidance(c, size)[y0:y1, x, 3] == 0).sum())

    rest = gap_pixels(v)  # the canonical mouth is slightly parted
    assert rest <= 4
    opened = v.copy()
    lower = v[:, 1] < v[LOWER_INNER_LIP, 1] + 0.05
    opened[lower, 1] -= 1.5  # jaw and lower lip drop 1.5 cm
    assert gap_pixels(opened) >= rest + 7
