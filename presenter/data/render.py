"""Render a talking clip from a still portrait: the mesh, moved by mouth parameters, head motion
and blinks, warps the aligned face crop; the mouth interior is drawn where the lips part.

Rest is a closed mouth: a portrait photographed with parted lips is first sealed (its rest mesh
is the fitted mesh with the inner lips brought together), so every identity starts from the same
state and `close` in the params only has to hold it. Everything happens in the 256 px aligned
crop; each frame is re-aligned on its own stable landmarks, as real footage would be.

Legend: T frames, V = 468 vertices, P mouth params.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from presenter.avatar.idle import close_eyes
from presenter.face.align import align_transform, crop, warp_points
from presenter.face.canonical import canonical_mesh
from presenter.face.fit import FittedFace, fit_points, pose_mesh
from presenter.face.landmarker import FaceLandmarker
from presenter.face.warp import warp_image
from presenter.motion.mouth import TEETH, TONGUE, closed_rest, deform
from presenter.render.warp_baseline import draw_mouth_interior, fill_lip_gap

CROP = 256
HEAD_DEG = 3.0           # head-motion amplitude per axis
BLINK_EVERY_S = 3.5      # mean interval between blinks
_MIN_FACE_PX = 64          # narrower faces would be upsampled mush in the 256 px crop


@dataclass(frozen=True)
class Still:
    """An identity ready to animate: its aligned crop, the fitted mesh in crop pixels, its rest mesh."""
    crop: np.ndarray       # (256, 256, 3) uint8
    verts: np.ndarray      # (V, 3) crop pixels, as photographed
    fit: FittedFace        # fitted in crop pixels
    rest: np.ndarray       # (V, 3) cm, canonical frame, mouth closed


def augment_image(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour, scale, crop-offset and mirror augmentation of a portrait (H, W, 3) uint8."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    gain = rng.uniform(0.8, 1.2, 3) * rng.uniform(0.85, 1.15)
    grey = img.mean(axis=2, keepdims=True)
    sat = rng.uniform(0.7, 1.3)
    img = (grey + (img - grey) * sat) * gain + rng.uniform(-15, 15)
    h, w = img.shape[:2]
    s = rng.uniform(0.85, 1.15)
    m = np.array([[s, 0, (1 - s) * w / 2 + rng.uniform(-0.05, 0.05) * w],
                  [0, s, (1 - s) * h / 2 + rng.uniform(-0.05, 0.05) * h]], np.float32)
    img = cv2.warpAffine(np.clip(img, 0, 255).astype(np.uint8), m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(img)


def prepare_still(image: np.ndarray, landmarker: FaceLandmarker) -> Still | None:
    """Detect, fit and crop one portrait; None if no usable face."""
    faces = landmarker.detect(image)
    if not faces or faces[0].width_px < _MIN_FACE_PX:
        return None
    obs = faces[0]
    m = align_transform(obs.landmarks[:, :2], CROP)
    pts = warp_points(obs.landmarks, m)  # z scaled with x, y; stays MediaPipe's "smaller = nearer"
    fitted = fit_points(pts, obs.matrix)
    return Still(fill_lip_gap(crop(image, m, CROP), fitted.verts_px), fitted.verts_px, fitted,
                 closed_rest(fitted.canon))


def head_motion(n: int, rng: np.random.Generator, fps: int = 25) -> np.ndarray:
    """Smooth random head rotations (T, 3, 3): two sinusoids per axis, random rates and phases."""
    t = np.arange(n) / fps
    ang = np.zeros((n, 3))
    for k in range(3):
        for _ in range(2):
            ang[:, k] += np.radians(HEAD_DEG / 2) * np.sin(2 * np.pi * rng.uniform(0.1, 0.6) * t + rng.uniform(0, 6.3))
    cx, sx, cy, sy, cz, sz = (f(ang[:, k]) for k in range(3) for f in (np.cos, np.sin))
    one, zero = np.ones(n), np.zeros(n)
    rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cx, -sx], -1), np.stack([zero, sx, cx], -1)], -2)
    ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    rz = np.stack([np.stack([cz, -sz, zero], -1), np.stack([sz, cz, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return rz @ ry @ rx


def blinks(n: int, rng: np.random.Generator, fps: int = 25) -> np.ndarray:
    """Eyelid closure (T,) in [0, 1]: blinks of ~0.2 s at random times."""
    out = np.zeros(n)
    t = rng.uniform(0.3, BLINK_EVERY_S)
    frames = np.arange(n) / fps
    while t < n / fps:
        x = (frames - t) / 0.2
        out = np.maximum(out, np.where(np.abs(x) < 0.5, np.cos(np.pi * x) ** 2, 0.0))
        t += rng.uniform(0.5, 2.0) * BLINK_EVERY_S
    return out


def render_clip(still: Still, params: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames (T, 256, 256, 3) uint8 and the face arrays of the corpus format for mouth params (T, P)."""
    n = len(params)
    rots, blink = head_motion(n, rng), blinks(n, rng)
    centre = canonical_mesh().vertices.mean(0)
    f = still.fit
    frames = np.empty((n, CROP, CROP, 3), np.uint8)
    out = {k: [] for k in ("verts", "canon", "rotation", "scale", "translation")}
    for i in range(n):
        canon = deform(still.rest, params[i])
        if blink[i] > 0:
            canon = close_eyes(canon, blink[i])
        moved = (canon - centre) @ rots[i].T + centre
        dst = pose_mesh(moved, f.rotation, f.scale, f.translation)
        img = warp_image(still.crop, still.verts, dst)
        draw_mouth_interior(img, dst, float(params[i, TEETH]), float(params[i, TONGUE]))  # rest is sealed
        m = align_transform(dst, CROP)
        frames[i] = crop(img, m, CROP)
        v = warp_points(dst, m)
        fitted = fit_points(v * np.array([1.0, 1.0, -1.0], np.float32), f.matrix)
        for k, val in (("verts", v), ("canon", fitted.canon), ("rotation", fitted.rotation),
                       ("scale", fitted.scale), ("translation", fitted.translation)):
            out[k].append(val)
    face = {k: np.asarray(v, np.float32) for k, v in out.items()}
    face["neutral"] = still.rest.astype(np.float32)
    face["params"] = params.astype(np.float32)
    return frames, face
