"""Masks from the fitted mesh at crop resolution: lower face (lip-sync), lips, whole face (swap).

All are float32 (S, S) in [0, 1]. The lower-face mask is the convex hull of the mesh below
the nose, grown downwards by `JAW_MARGIN` of the crop so that a jaw opened by the generator
stays inside it, then feathered; the lips mask is the hull of the outer lips grown by
`LIPS_GROW` of the mouth's width, feathered by half that (the generator paints the mouth there
while a warp moves the skin around it); the face mask is the hull of the whole mesh, feathered.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from presenter.face.canonical import LIPS_OUTER, canonical_mesh

SUBNASALE = 2          # the point under the nose where the lower-face region starts
JAW_MARGIN = 0.06      # downward growth of the mouth mask, fraction of the crop side
FEATHER = 0.03         # edge softness, fraction of the crop side
LIPS_GROW = 0.16       # growth of the lips mask, fraction of the mouth's width (corner to corner), as trained
FACE_GROW = 0.05       # the swap mask: the mesh hull scaled by 1 + this about its centre, past the jaw line
MOUTH_CORNERS = (61, 291)


@lru_cache(maxsize=1)
def lower_face_ids() -> np.ndarray:
    v = canonical_mesh().vertices
    return np.flatnonzero(v[:, 1] <= v[SUBNASALE, 1])


def _hull_mask(points: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(points[:, :2] * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=4)
    return mask


def _feather(mask: np.ndarray, size: int) -> np.ndarray:
    k = max(1, int(round(FEATHER * size))) * 2 + 1
    return cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (k, k), 0)


def mouth_mask(verts_crop: np.ndarray, size: int) -> np.ndarray:
    """Lower-face mask (S, S) from the mesh in crop pixels (V, 2+)."""
    pts = np.asarray(verts_crop, np.float32)[lower_face_ids(), :2]
    grown = np.concatenate([pts, pts + np.array([0.0, JAW_MARGIN * size], np.float32)])
    return _feather(_hull_mask(grown, size), size)


def lips_mask(verts_crop: np.ndarray, size: int, grow: float = LIPS_GROW) -> np.ndarray:
    """Mask (S, S) of the outer lips and a margin of `grow` of the mouth's width around them, from
    the mesh in crop pixels (V, 2+)."""
    pts = np.asarray(verts_crop, np.float32)[:, :2]
    grow = grow * float(np.linalg.norm(pts[MOUTH_CORNERS[0]] - pts[MOUTH_CORNERS[1]]))
    hull = _hull_mask(pts[list(LIPS_OUTER)], size)
    k = 2 * max(1, int(round(grow))) + 1
    grown = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return cv2.GaussianBlur(grown.astype(np.float32) / 255.0, (0, 0), max(grow / 2, 0.5))


def face_mask(verts_crop: np.ndarray, size: int) -> np.ndarray:
    """Whole-face mask (S, S) from the mesh in crop pixels (V, 2+)."""
    return _feather(_hull_mask(np.asarray(verts_crop, np.float32)[:468], size), size)


def swap_mask(verts_crop: np.ndarray, size: int) -> np.ndarray:
    """Face-swap paint mask (S, S): the whole-face mask of the mesh (V, 2+) grown by FACE_GROW about its centre."""
    pts = np.asarray(verts_crop, np.float32)[:, :2]
    centre = pts.mean(0)
    return face_mask(centre + (pts - centre) * (1.0 + FACE_GROW), size)
