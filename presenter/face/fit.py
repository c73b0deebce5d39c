"""Landmarks -> fitted face mesh: pose-free metric mesh in the canonical head frame, plus head pose.

MediaPipe's landmarks are a weak-perspective projection (x, y in pixels, z in pixels along
the view axis). A weighted similarity (Umeyama) fit of the canonical mesh's stable Procrustes
landmarks to them gives rotation R, scale s (px per cm) and translation t, with

    P = s R C + t,   P = (x, -y, -z) in pixels (x right, y up, z towards camera),

so the pose-free mesh of the person is C = R^T (P - t) / s in cm, comparable across frames.
MediaPipe's own facial transformation matrix (perspective, cm) is kept as the metric head pose.

Legend: V = 468 mesh vertices, N frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from presenter.face.canonical import LOWER_INNER_LIP, N_VERTICES, UPPER_INNER_LIP, canonical_mesh
from presenter.face.landmarker import FaceObservation

_FLIP = np.array([1.0, -1.0, -1.0])  # image (x right, y down, z away) <-> (x right, y up, z towards)


@dataclass(frozen=True)
class FittedFace:
    """One frame's fitted mesh."""
    verts_px: np.ndarray     # (V, 3) float32, image pixels: x right, y down, z px with larger = nearer
    canon: np.ndarray        # (V, 3) float32, cm, canonical head frame (pose removed)
    rotation: np.ndarray     # (3, 3) float32, canonical -> image-up frame
    scale: float             # pixels per cm
    translation: np.ndarray  # (3,) float32, pixels, image-up frame
    matrix: np.ndarray       # (4, 4) float32, MediaPipe's canonical -> camera transform (cm)


def similarity_3d(src: np.ndarray, dst: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Weighted Umeyama: (R (3, 3), s, t (3,)) minimising sum w |s R src + t - dst|^2; src, dst (K, 3)."""
    w = weights / weights.sum()
    mu_s, mu_d = w @ src, w @ dst
    a, b = src - mu_s, dst - mu_d
    cov = (b * w[:, None]).T @ a
    u, sig, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = u @ fix @ vt
    var = (w * (a ** 2).sum(1)).sum()
    s = float((sig * np.diag(fix)).sum() / var)
    return rot, s, mu_d - s * rot @ mu_s


def pose_mesh(canon: np.ndarray, rotation: np.ndarray, scale: float, translation: np.ndarray) -> np.ndarray:
    """Canonical-frame mesh (V, 3) cm -> image pixels (V, 3) (x right, y down, z larger = nearer)."""
    p = scale * canon @ rotation.T + translation
    return (p * np.array([1.0, -1.0, 1.0])).astype(np.float32)


def fit_face(obs: FaceObservation) -> FittedFace:
    """Fit the canonical mesh to one observation's landmarks."""
    return fit_points(obs.landmarks, obs.matrix)


def fit_points(landmarks_px: np.ndarray, matrix: np.ndarray) -> FittedFace:
    """Fit the canonical mesh to landmarks (>= V, 3) in MediaPipe's pixel convention (z smaller = nearer)."""
    cm = canonical_mesh()
    pts = np.asarray(landmarks_px, np.float64)[:N_VERTICES] * _FLIP
    ids = cm.procrustes_ids
    rot, s, t = similarity_3d(cm.vertices[ids].astype(np.float64), pts[ids], cm.procrustes_weights.astype(np.float64))
    canon = (pts - t) @ rot / s
    return FittedFace(
        verts_px=(pts * np.array([1.0, -1.0, 1.0])).astype(np.float32),
        canon=canon.astype(np.float32), rotation=rot.astype(np.float32), scale=s,
        translation=t.astype(np.float32), matrix=np.asarray(matrix, np.float32))


def mouth_opening_cm(canon: np.ndarray) -> np.ndarray:
    """Inner-lip gap (..., ) in cm from canonical meshes (..., V, 3)."""
    return canon[..., UPPER_INNER_LIP, 1] - canon[..., LOWER_INNER_LIP, 1]


def neutral_mesh(canons: np.ndarray, *, closed_fraction: float = 0.3) -> np.ndarray:
    """A person's neutral mesh (V, 3) from a clip's canonical meshes (N, V, 3).

    The per-vertex median over the frames whose mouth is most closed (the lowest
    `closed_fraction` of inner-lip openings), so speech in the clip does not open the neutral.
    """
    canons = np.asarray(canons, np.float32)
    assert canons.ndim == 3 and canons.shape[1:] == (N_VERTICES, 3), f"expected (N, {N_VERTICES}, 3), got {canons.shape}"
    k = max(1, int(round(len(canons) * closed_fraction)))
    closed = np.argsort(mouth_opening_cm(canons), kind="stable")[:k]
    return np.median(canons[closed], axis=0)


def motion_from_neutral(canons: np.ndarray) -> np.ndarray:
    """A person's canonical meshes (N, V, 3) cm -> their motion from their own neutral mesh (N, V, 3):
    head pose and face shape drop out, how the mouth moves is left (the SyncFormer's style input)."""
    canons = np.asarray(canons, np.float32)
    return canons - neutral_mesh(canons)[None]
