"""The renderers' shared geometry: an avatar frame's fitted mesh posed with a mouth, in crop pixels.

Legend: V = 468 mesh vertices, P mouth parameters (presenter.motion.mouth).

Sealed lips and the jaw. The SyncFormer often closes the lips (p/b/m) with the whole mouth region
moved down a few millimetres, lips stretched. Drawn by warping a photo, that reads as parted
lips: on the default avatar the landmarker measured a gap of 0.065 eye distances for a pose whose
mesh gap was 0.004 cm, against 0.021 for the same frame's closed rest, and 0 of 34 p/b/m of
held-out read speech sealed. So vertical motion fades with the lip gap below SEAL_SETTLE_CM:
a mouth that the mesh closes stays closed in the image, and an open one is untouched. On that
speech (offline, no network) sealed p/b/m rose to 22 of 34 with t/d/k/g kept open (39 of 43).
"""
from __future__ import annotations

import numpy as np

from presenter.face.align import warp_points
from presenter.face.fit import pose_mesh
from presenter.face.canonical import LOWER_INNER_LIP, UPPER_INNER_LIP
from presenter.motion.mouth import N_PARAMS, REST_GAP_CM, closed_rest, deform

SEAL_SETTLE_CM = 0.5      # mesh lip gaps below this scale the mouth's vertical motion by gap / this


def posed_mesh(canon: np.ndarray, rotation: np.ndarray, scale: float, translation: np.ndarray,
               align: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """A frame's pose-free mesh canon (V, 3) cm with a mouth -> posed mesh (V, 3) in crop pixels.

    rotation (3, 3), scale (px per cm), translation (3,): the frame's head pose; align (2, 3): frame ->
    crop. mouth: params (P,) deform the frame's own mouth (a photo's parted lips stay at rest), or
    displacements (V, 3) cm are added to the frame's closed rest (a SyncFormer's output).
    """
    if mouth.shape == (N_PARAMS,):
        moved = deform(canon, mouth)
    else:
        moved = closed_rest(canon) + settle_sealed(mouth)
    return warp_points(pose_mesh(moved, rotation, scale, translation), align)


def settle_sealed(disp: np.ndarray) -> np.ndarray:
    """Displacements (V, 3) cm from the closed rest -> the same with their vertical part scaled by
    min(1, lip gap / SEAL_SETTLE_CM) (see the module docstring)."""
    gap = max(0.0, REST_GAP_CM + float(disp[UPPER_INNER_LIP, 1] - disp[LOWER_INNER_LIP, 1]))
    if gap >= SEAL_SETTLE_CM:
        return disp
    out = disp.copy()
    out[:, 1] *= gap / SEAL_SETTLE_CM
    return out
