"""The renderers' shared geometry: an avatar frame's fitted mesh posed with a mouth, in crop pixels.

Legend: V = 468 mesh vertices, P mouth parameters (presenter.motion.mouth).
"""
from __future__ import annotations

import numpy as np

from presenter.face.align import warp_points
from presenter.face.fit import pose_mesh
from presenter.motion.mouth import N_PARAMS, closed_rest, deform


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
        moved = closed_rest(canon) + mouth
    return warp_points(pose_mesh(moved, rotation, scale, translation), align)
