"""Mesh-driven image warp: move a face by moving its mesh (idle loops, blinks, the baseline mouth).

The deformed mesh is rasterised with each vertex carrying its source pixel position, which
gives an exact backward map inside the face. Outside, the displacement is extended by a
normalised Gaussian blur and faded to zero with distance, so hair and neck follow the head
a little and the background stays still. One cv2.remap then resamples the image.
"""
from __future__ import annotations

import cv2
import numpy as np

from presenter.face.canonical import canonical_mesh
from presenter.face.raster import rasterise

FALLOFF_FRAC = 0.35  # how far outside the face the motion fades out, fraction of the face width
_DOWN = 4             # the outside field is smooth: compute it at 1/4 resolution


def displacement_field(src_px: np.ndarray, dst_px: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Backward displacement (H, W, 2) float32: output pixel p samples the source at p + field[p].

    src_px, dst_px: the mesh (V, 3) in image pixels before and after the motion (z larger = nearer).
    """
    h, w = size
    tris = canonical_mesh().triangles
    disp = (src_px[:, :2] - dst_px[:, :2]).astype(np.float32)
    verts = np.ascontiguousarray(dst_px * np.array([1.0, 1.0, -1.0], np.float32))  # raster wants smaller z nearer
    r = rasterise(verts, tris, disp, (h, w))
    cov = r.coverage.astype(np.float32)
    face_w = float(np.ptp(dst_px[:, 0]))
    sigma = max(1.0, FALLOFF_FRAC * face_w / _DOWN)
    small = (max(1, w // _DOWN), max(1, h // _DOWN))
    c_s = cv2.resize(cov, small, interpolation=cv2.INTER_AREA)
    d_s = cv2.resize(r.attrs * cov[..., None], small, interpolation=cv2.INTER_AREA)
    c_b = cv2.GaussianBlur(c_s, (0, 0), sigma)
    d_b = cv2.GaussianBlur(d_s, (0, 0), sigma)
    ext = d_b / np.maximum(c_b, 1e-6)[..., None] * np.clip(c_b * 2.0, 0, 1)[..., None]
    ext = cv2.resize(ext, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.where(cov[..., None] > 0, r.attrs, ext).astype(np.float32)


def warp_image(image: np.ndarray, src_px: np.ndarray, dst_px: np.ndarray) -> np.ndarray:
    """Image (H, W, C) whose face mesh sits at src_px, redrawn with the mesh at dst_px."""
    h, w = image.shape[:2]
    field = displacement_field(src_px, dst_px, (h, w))
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, gx + field[..., 0], gy + field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
