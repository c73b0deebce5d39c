"""MediaPipe's canonical face mesh (468 vertices, 898 triangles), shipped as a small .npz.

Legend: V = 468 vertices, F = 898 triangles. Positions are in cm in the canonical head frame
(x right of the image, y up, z towards the camera); uv in [0, 1]. The file is made by
`scripts/extract_canonical_mesh.py` from the landmarker task's geometry metadata.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

N_VERTICES = 468
N_TRIANGLES = 898

# Landmark index groups of the 468-point topology (MediaPipe face mesh numbering).
LIPS_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146)
LIPS_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
MOUTH_CORNERS = (61, 291)
LEFT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)     # subject's right eye in image-left
LEFT_EYE_LOWER = (7, 163, 144, 145, 153, 154, 155)
RIGHT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
RIGHT_EYE_LOWER = (249, 390, 373, 374, 380, 381, 382)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
NOSE_TIP = 1
CHIN = 152


@dataclass(frozen=True)
class CanonicalMesh:
    vertices: np.ndarray            # (V, 3) float32, cm
    uv: np.ndarray                  # (V, 2) float32
    triangles: np.ndarray           # (F, 3) int32, counter-clockwise seen from the front (+z)
    procrustes_ids: np.ndarray      # (K,) int32, stable landmarks used for rigid fitting
    procrustes_weights: np.ndarray  # (K,) float32


@lru_cache(maxsize=1)
def canonical_mesh() -> CanonicalMesh:
    """The shipped canonical mesh, loaded once."""
    with resources.files("presenter.face").joinpath("data/canonical_mesh.npz").open("rb") as f:
        d = np.load(f)
        mesh = CanonicalMesh(**{k: d[k] for k in CanonicalMesh.__dataclass_fields__})
    for a in (mesh.vertices, mesh.uv, mesh.triangles, mesh.procrustes_ids, mesh.procrustes_weights):
        a.setflags(write=False)
    return mesh


@lru_cache(maxsize=1)
def mouth_interior_triangles() -> np.ndarray:
    """(F,) bool: triangles spanning the lip opening (all three corners on the inner lip ring).

    The canonical topology bridges the mouth; renderers that must show an open mouth as a
    hole (guidance) drop these, warps that must stay defined everywhere keep them.
    """
    mask = np.isin(canonical_mesh().triangles, LIPS_INNER).all(axis=1)
    mask.setflags(write=False)
    return mask
