"""A natural, seamless idle loop for a still portrait: blinks, slight head sway, breathing.

Every motion is a sum of sinusoids with a whole number of cycles over the loop, so frame N
equals frame 0 and the loop has no seam. Motion is applied to the fitted mesh in the
canonical head frame (rotation about the head centre, eyelids closing) and rendered by the
mesh warp. Amplitudes are small on purpose: a presenter that bobs is distracting.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from presenter.face.canonical import (LEFT_EYE_LOWER, LEFT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER,
                                      canonical_mesh)

# Skin rings just above each upper lid: they follow a blink half-way.
_LEFT_CREASE = (247, 30, 29, 27, 28, 56, 190)
_RIGHT_CREASE = (467, 260, 259, 257, 258, 286, 414)


@dataclass(frozen=True)
class IdleMotion:
    """Idle-loop settings; amplitudes in degrees, cm and fractions."""
    fps: int = 25
    seconds: float = 4.0         # loop length
    yaw_deg: float = 1.6         # head sway amplitudes
    pitch_deg: float = 1.0
    roll_deg: float = 0.8
    breath_cm: float = 0.12      # vertical head rise with each breath
    blink_times_s: tuple[float, ...] = (1.1, 3.2)
    blink_s: float = 0.22        # full blink duration

    @property
    def n_frames(self) -> int:
        return int(round(self.fps * self.seconds))


def _loop_sin(t: np.ndarray, period: float, cycles: int, phase: float) -> np.ndarray:
    return np.sin(2 * np.pi * cycles * t / period + phase)


def blink_curve(motion: IdleMotion) -> np.ndarray:
    """Eyelid closure (N,) in [0, 1] per frame: a smooth close-and-open bump at each blink time."""
    t = np.arange(motion.n_frames) / motion.fps
    out = np.zeros_like(t)
    for tb in motion.blink_times_s:
        x = np.clip((t - tb) / motion.blink_s, -0.5, 0.5)
        out = np.maximum(out, np.cos(np.pi * x) ** 2 * (np.abs(t - tb) < motion.blink_s / 2))
    return out


def head_rotation(motion: IdleMotion) -> np.ndarray:
    """Per-frame small head rotations (N, 3, 3) in the canonical frame."""
    t = np.arange(motion.n_frames) / motion.fps
    p = motion.seconds
    yaw = np.radians(motion.yaw_deg) * (0.7 * _loop_sin(t, p, 1, 0.0) + 0.3 * _loop_sin(t, p, 2, 1.3))
    pitch = np.radians(motion.pitch_deg) * _loop_sin(t, p, 1, 2.1)
    roll = np.radians(motion.roll_deg) * _loop_sin(t, p, 1, 4.0)
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(t), np.zeros_like(t)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def breathing(motion: IdleMotion) -> np.ndarray:
    """Vertical head offset (N,) in cm: one breath per loop."""
    t = np.arange(motion.n_frames) / motion.fps
    return motion.breath_cm * _loop_sin(t, motion.seconds, 1, 0.5)


def close_eyes(canon: np.ndarray, amount: float) -> np.ndarray:
    """The canonical-frame mesh (V, 3) with both eyes closed by `amount` in [0, 1]."""
    out = canon.copy()
    for upper, lower, crease in ((LEFT_EYE_UPPER, LEFT_EYE_LOWER, _LEFT_CREASE),
                                 (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, _RIGHT_CREASE)):
        up, lo, cr = list(upper), list(lower), list(crease)
        meet = canon[lo] + 0.15 * (canon[up] - canon[lo])  # lids meet low, as real lids do
        out[up] = canon[up] + amount * (meet - canon[up])
        out[lo] = canon[lo] + amount * (meet - canon[lo]) * 0.3
        out[cr] = canon[cr] + 0.5 * amount * (out[up] - canon[up])
    return out


def idle_meshes(canon: np.ndarray, motion: IdleMotion) -> np.ndarray:
    """Per-frame canonical-frame meshes (N, V, 3) of the idle loop, pose deltas included.

    Rotation is about the head centre (the mean of the canonical mesh), so the face turns
    rather than orbits.
    """
    centre = canonical_mesh().vertices.mean(0)
    rots = head_rotation(motion)
    lift = breathing(motion)
    blinks = blink_curve(motion)
    out = np.empty((motion.n_frames,) + canon.shape, np.float32)
    for i in range(motion.n_frames):
        m = close_eyes(canon, blinks[i]) if blinks[i] > 0 else canon
        out[i] = (m - centre) @ rots[i].T + centre + np.array([0.0, lift[i], 0.0])
    return out
