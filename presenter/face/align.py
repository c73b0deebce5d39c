"""Similarity alignment of a face to a canonical crop, and feathered paste-back.

The crop template is the canonical mesh seen from the front: its face oval spans
`FACE_FRACTION` of the crop width, centred between brow and chin. The transform is a 2D
weighted similarity from the stable Procrustes landmarks (brow, nose bridge, eye corners,
temples: they do not move with the mouth) to the template, so the crop is steady while
the person speaks.

A transform is a (2, 3) float32 affine matrix, frame pixels -> crop pixels.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from presenter.face.canonical import FACE_OVAL, canonical_mesh

CROP_SIZES = (128, 256)
FACE_FRACTION = 0.72   # face-oval width / crop width: leaves room for jaw motion and hairline
CENTRE_Y_SHIFT = 0.04  # crop centre below the oval's centre, fraction of crop (room for an open jaw)

MOUTH_WINDOW_256 = (64, 128, 128)
"""The generator's crop: (x0, y0, side) of a fixed square of the 256 px aligned crop, in its pixels.

Measured on the template (sealed canonical mesh, 256 px): subnasale y 136, outer lips x 99..157 and
y 151..175, chin y 223. Wide faces and open mouths reach further: the astronaut's smiling lips span
x 88..168, and her chin drops from y 222 to 247 at the largest jaw command (2.2 cm at the lower lip).
Over the 1,600 frames of 200 GAN graded sequences (sealed to 3.0 cm open): outer lips x 80..175 and
y 137..206, chin y at most 237 (p99 234), subnasale y 125..146 (median 137).
So the window starts near the subnasale (the lower-face mask begins there) and runs to the crop's
bottom edge, the only way to keep a dropped chin inside it; x 64..192 holds the widest mouths with
16 px or more on each side. It is half the crop's side: the mouth is drawn at the 256 px crop's
resolution.
"""


@lru_cache(maxsize=8)
def template(size: int) -> np.ndarray:
    """Frontal canonical mesh in crop pixels (V, 2), x right, y down."""
    v = canonical_mesh().vertices[:, :2].astype(np.float64) * np.array([1.0, -1.0])
    oval = v[list(FACE_OVAL)]
    lo, hi = oval.min(0), oval.max(0)
    a = FACE_FRACTION * size / (hi[0] - lo[0])
    centre = (lo + hi) / 2
    out = (v - centre) * a + np.array([size / 2, size / 2 - CENTRE_Y_SHIFT * size])
    out.setflags(write=False)
    return out


def similarity_2d(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation) src (K, 2) -> dst (K, 2), as (2, 3)."""
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    # Closed form for z -> c z in complex numbers: c = sum w conj(a) b / sum w |a|^2.
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    c = (w * np.conj(za) * zb).sum() / (w * np.abs(za) ** 2).sum()
    m = np.array([[c.real, -c.imag, 0.0], [c.imag, c.real, 0.0]])
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m.astype(np.float32)


def align_transform(landmarks_px: np.ndarray, size: int) -> np.ndarray:
    """Frame -> crop transform (2, 3) for a face given its landmarks or mesh (>= 468, 2+) in pixels."""
    cm = canonical_mesh()
    ids = cm.procrustes_ids
    return similarity_2d(np.asarray(landmarks_px, np.float64)[ids, :2], template(size)[ids], cm.procrustes_weights)


def warp_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) transform to points (..., 2+); extra columns (z) are scaled by the transform's scale."""
    pts = np.asarray(points, np.float32)
    out = pts.copy()
    out[..., :2] = pts[..., :2] @ m[:, :2].T + m[:, 2]
    if pts.shape[-1] > 2:
        out[..., 2:] *= np.sqrt(abs(np.linalg.det(m[:, :2])))
    return out


def crop(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Aligned crop (size, size, C) of a frame (H, W, C); borders replicate the edge."""
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@lru_cache(maxsize=8)
def feather_mask(size: int, feather_frac: float = 0.08) -> np.ndarray:
    """A (size, size) float32 mask: 1 in the middle, smoothly 0 at the crop border."""
    f = max(1, int(round(size * feather_frac)))
    ramp = np.clip((np.minimum(np.arange(size), np.arange(size)[::-1]) + 0.5) / f, 0, 1).astype(np.float32)
    mask = np.outer(ramp, ramp)
    mask.setflags(write=False)
    return mask


def paste_back(frame: np.ndarray, crop_img: np.ndarray, m: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Blend a crop back into a copy of the frame through the inverse of m.

    frame (H, W, 3) uint8; crop_img (S, S, 3) uint8; mask (S, S) float32 in [0, 1], default
    the feathered border mask. Only the frame's bounding box of the crop is touched.
    """
    s = crop_img.shape[0]
    mask = feather_mask(s) if mask is None else mask
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float32) @ inv[:, :2].T + inv[:, 2]
    h, w = frame.shape[:2]
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int), 0, [w, h])
    out = frame.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    # Crop -> sub-rectangle transform: shift the inverse by the rectangle's origin.
    sub = inv.copy()
    sub[:, 2] -= (x0, y0)
    size = (int(x1 - x0), int(y1 - y0))
    patch = cv2.warpAffine(crop_img, sub, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(np.ascontiguousarray(mask, np.float32), sub, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = (region + alpha * (patch.astype(np.float32) - region) + 0.5).astype(np.uint8)
    return out


def mouth_window(crop256: np.ndarray) -> np.ndarray:
    """The generator's window (128, 128, ...) of a 256 px aligned crop (256, 256, ...), as a view."""
    x0, y0, side = MOUTH_WINDOW_256
    if crop256.shape[:2] != (256, 256):
        raise ValueError(f"mouth_window needs a 256 px aligned crop, got shape {crop256.shape}")
    return crop256[y0:y0 + side, x0:x0 + side]


def place_mouth_window(crop256: np.ndarray, window: np.ndarray) -> np.ndarray:
    """A copy of the 256 px crop with its mouth window replaced by window (128, 128, ...)."""
    out = crop256.copy()
    mouth_window(out)[...] = window
    return out


def to_mouth_window(points_256: np.ndarray) -> np.ndarray:
    """Points (..., 2+) in 256 px crop pixels -> the same points in window pixels (z unchanged)."""
    out = np.array(points_256, np.float32)
    out[..., :2] -= np.array(MOUTH_WINDOW_256[:2], np.float32)
    return out
