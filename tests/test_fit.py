"""Fitting: landmarks -> pose-free metric mesh + head pose, and the neutral mesh of a clip."""
from __future__ import annotations

import numpy as np

from presenter.face.canonical import canonical_mesh
from presenter.face.fit import fit_face, mouth_opening_cm, neutral_mesh, pose_mesh, similarity_3d
from presenter.face.landmarker import FaceLandmarker


def test_similarity_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(1)
    src = rng.normal(size=(40, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot = q * np.sign(np.linalg.det(q))
    dst = 3.5 * src @ rot.T + np.array([1.0, -2.0, 0.5])
    r, s, t = similarity_3d(src, dst, np.ones(40))
    np.testing.assert_allclose(r, rot, atol=1e-9)
    assert abs(s - 3.5) < 1e-9
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-9)


def test_fit_on_real_portraits(astronaut: np.ndarray, hopper: np.ndarray) -> None:
    """The fitted canonical-frame mesh is a human face close to the canonical one (mean < 0.5 cm),
    re-posing it reproduces the landmarks, and its rotation agrees with MediaPipe's pose within 10 degrees."""
    with FaceLandmarker("image") as lm:
        for img in (astronaut, hopper):
            f = fit_face(lm.detect(img)[0])
            assert np.abs(f.canon - canonical_mesh().vertices).mean() < 0.5
            np.testing.assert_allclose(pose_mesh(f.canon, f.rotation, f.scale, f.translation), f.verts_px, atol=1e-3)
            cos = (np.trace(f.rotation.T @ f.matrix[:3, :3]) - 1) / 2
            assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 10


def test_neutral_mesh_ignores_speech_frames() -> None:
    """Neutral from a clip that speaks 70% of the time keeps the closed-mouth shape."""
    base = canonical_mesh().vertices
    rng = np.random.default_rng(0)
    frames = np.repeat(base[None], 50, axis=0).copy()
    open_ids = rng.choice(50, 35, replace=False)
    frames[open_ids, 14, 1] -= 1.5  # lower inner lip drops 1.5 cm
    neutral = neutral_mesh(frames)
    assert abs(mouth_opening_cm(neutral) - mouth_opening_cm(base)) < 1e-6
