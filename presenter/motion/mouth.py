"""Mouth-shape parameters and how they deform a face mesh.

A mouth pose is a vector of `N_PARAMS` floats (legend P). Deformation works in the canonical
head frame (cm; x right, y up, z towards the camera) on top of a person's own mesh, so the
same parameters move any face:

| index | name   | range   | mesh effect |
|-------|--------|---------|-------------|
| 0     | jaw    | 0..1    | lower lip, chin and jaw drop and retract (1 = 2.2 cm at the lower lip) |
| 1     | spread | -1..1   | mouth corners move out (+, smile/ee) or in (-) by up to 0.5 cm each |
| 2     | round  | 0..1    | lips gather towards the centre by up to 35% and protrude 0.4 cm (oo, w) |
| 3     | close  | 0..1    | inner lips pressed together at their midline (p, b, m); beats jaw and the photo's own gap |
| 4     | teeth  | 0..1    | how much teeth show in the opening (render hint, no mesh effect) |
| 5     | tongue | 0..1    | tongue visible behind the teeth (render hint, no mesh effect) |

`close` acts after `jaw`, so a sealed bilabial is sealed even if the face was photographed
smiling with parted lips.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from presenter.face.canonical import LOWER_INNER_LIP, UPPER_INNER_LIP, canonical_mesh

PARAM_NAMES = ("jaw", "spread", "round", "close", "teeth", "tongue")
N_PARAMS = len(PARAM_NAMES)
JAW, SPREAD, ROUND, CLOSE, TEETH, TONGUE = range(N_PARAMS)
PARAM_LOW = np.array([0.0, -1.0, 0.0, 0.0, 0.0, 0.0], np.float32)
PARAM_HIGH = np.ones(N_PARAMS, np.float32)

JAW_DROP_CM = 2.2
SPREAD_CM = 0.5
ROUND_GATHER = 0.35
ROUND_PROTRUDE_CM = 0.4
JAW_HALF_WIDTH_CM = 4.0   # beyond this |x| the jaw weight fades out over JAW_FADE_CM
JAW_FADE_CM = 2.5

# Inner-lip pairs facing each other across the opening, corner to corner (upper, lower).
INNER_PAIRS = ((191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318), (415, 324))
OUTER_PAIRS = ((185, 146), (40, 91), (39, 181), (37, 84), (0, 17), (267, 314), (269, 405), (270, 321), (409, 375))
REST_GAP_CM = 0.05        # lips lightly touching: the closed rest
SEAL_FADE_CM = 1.2        # lip-body vertices this far beyond the inner lip follow a seal less


def rest() -> np.ndarray:
    """The neutral mouth pose (P,): everything 0."""
    return np.zeros(N_PARAMS, np.float32)


@lru_cache(maxsize=1)
def _weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-vertex (V,) weights of the canonical mesh: jaw, lip region, and x of the lip centre."""
    v = canonical_mesh().vertices
    y_up, y_lo = v[UPPER_INNER_LIP, 1], v[LOWER_INNER_LIP, 1]
    jaw = np.clip((y_up - v[:, 1]) / (y_up - y_lo), 0.0, 1.0)
    jaw *= np.clip(1.0 - (np.abs(v[:, 0]) - JAW_HALF_WIDTH_CM) / JAW_FADE_CM, 0.0, 1.0)
    for up, _ in INNER_PAIRS + OUTER_PAIRS:
        jaw[up] = 0.0
    for _, lo in INNER_PAIRS + OUTER_PAIRS:
        jaw[lo] = 1.0
    # Lip region: a soft ellipse around the mouth, for spread and round.
    centre = (v[UPPER_INNER_LIP] + v[LOWER_INNER_LIP]) / 2
    d = ((v[:, 0] - centre[0]) / 3.6) ** 2 + ((v[:, 1] - centre[1]) / 1.8) ** 2
    lips = np.clip(1.5 - d, 0.0, 1.0) * (v[:, 2] > centre[2] - 2.0)
    for a in (jaw, lips):
        a.setflags(write=False)
    return jaw, lips, centre


def deform(canon: np.ndarray, params: np.ndarray) -> np.ndarray:
    """A face mesh (V, 3) cm in the canonical frame, moved to the mouth pose params (P,)."""
    p = np.clip(np.asarray(params, np.float32), PARAM_LOW, PARAM_HIGH)
    jaw_w, lip_w, centre = _weights()
    out = np.asarray(canon, np.float32).copy()
    # Jaw: down and slightly back (rotation about a pivot behind the ear, linearised).
    out += jaw_w[:, None] * np.array([0.0, -JAW_DROP_CM, -0.3 * JAW_DROP_CM], np.float32) * p[JAW]
    # Spread and round act along x about the lip centre, weighted by the lip region.
    dx = out[:, 0] - centre[0]
    out[:, 0] += lip_w * (np.sign(dx) * np.minimum(np.abs(dx) / 2.5, 1.0) * SPREAD_CM * p[SPREAD]
                          - dx * ROUND_GATHER * p[ROUND])
    out[:, 2] += lip_w * ROUND_PROTRUDE_CM * p[ROUND]
    # Seal: inner lips meet at their midline; the lip bodies follow, fading over SEAL_FADE_CM.
    if p[CLOSE] > 0:
        up, lo = (list(x) for x in zip(*INNER_PAIRS))
        xs = (out[up, 0] + out[lo, 0]) / 2                       # (9,), increasing left to right
        half_gap = 0.5 * np.maximum(out[up, 1] - out[lo, 1], 0.0)
        mid = (out[up, 1] + out[lo, 1]) / 2
        h = np.interp(out[:, 0], xs, half_gap, left=0.0, right=0.0)     # (V,)
        off = out[:, 1] - np.interp(out[:, 0], xs, mid)
        w = np.clip(1.0 - (np.abs(off) - h) / SEAL_FADE_CM, 0.0, 1.0) * (lip_w > 0)
        shift = np.sign(off) * np.minimum(h, np.abs(off)) * w * p[CLOSE]
        shift[up], shift[lo] = half_gap * p[CLOSE], -half_gap * p[CLOSE]  # the pairs meet exactly
        out[:, 1] -= shift
    return out


def closed_rest(canon: np.ndarray) -> np.ndarray:
    """The mesh (V, 3) with the inner lips brought to REST_GAP_CM if it shows them parted: the rest
    pose that speech displacements (SyncFormer) start from, whatever mouth the photo shows."""
    gap = lip_gap_cm(canon)
    if gap <= REST_GAP_CM:
        return np.asarray(canon, np.float32).copy()
    p = np.zeros(N_PARAMS, np.float32)
    p[CLOSE] = 1.0 - REST_GAP_CM / gap
    return deform(canon, p)


def lip_gap_cm(canon: np.ndarray) -> float:
    """Inner-lip opening at the midline, cm (the landmarker-measurable quantity)."""
    return float(canon[UPPER_INNER_LIP, 1] - canon[LOWER_INNER_LIP, 1])
