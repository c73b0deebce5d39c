"""A user's video as the renderers see an avatar pack: per frame the face is tracked, fitted and aligned.

The renderers (`presenter.render`) draw the mouth into frame `index` of an `AvatarPack`: its frame,
its fitted mesh and pose, its 256 px aligned crop and lower-face mask. `video_pack` builds exactly
that from the frames of a video, at the video's own size, so the live path's renderers dub a video
without a line of their own changed. Frames (and crops) live in memory-mapped files in a scratch
folder, so a long video costs disk, not memory.

Legend: N frames, H, W frame size in pixels, V = 468 mesh vertices, S = 256 crop side.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from presenter.avatar.pack import AvatarPack
from presenter.errors import UserError
from presenter.face.align import align_transform, crop, warp_points
from presenter.face.fit import FittedFace, fit_points
from presenter.face.landmarker import FaceLandmarker
from presenter.face.masks import mouth_mask
from presenter.face.smoothing import OneEuroFilter

log = logging.getLogger(__name__)

CROP = 256                 # the renderers' crop side


def track_faces(frames: Iterable[np.ndarray], fps: float, *, face_index: int = 0,
                smooth: bool = True) -> Iterator[tuple[np.ndarray, FittedFace | None]]:
    """(frame, its fitted face or None where no face is seen) for each RGB frame (H, W, 3) of a video.

    face_index: 0 the largest face in each frame, 1 the next... smooth: a One-Euro filter on the
    landmarks (steady crops; it lags fast lip motion by about a frame, so a driver video's mouth
    is read unsmoothed), restarted after frames without a face."""
    smoother = OneEuroFilter()
    with FaceLandmarker("video", max_faces=face_index + 1) as lm:
        for i, rgb in enumerate(frames):
            faces = lm.detect(rgb, timestamp_ms=round(i * 1000 / fps))
            if len(faces) <= face_index:
                smoother.reset()
                yield rgb, None
                continue
            obs = faces[face_index]
            points = smoother(obs.landmarks, 1.0 / fps) if smooth else obs.landmarks
            yield rgb, fit_points(points, obs.matrix)


def _fill_lost(fitted: list[FittedFace | None]) -> list[FittedFace]:
    """Each frame's face, frames without one taking the nearest frame's (never drawn: they pass through)."""
    found = [i for i, f in enumerate(fitted) if f is not None]
    near = np.asarray(found)
    return [f if f is not None else fitted[int(near[np.argmin(np.abs(near - i))])] for i, f in enumerate(fitted)]


def _scratch_array(scratch: Path, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A uint8 array of `shape` backed by a file in the scratch folder."""
    return np.lib.format.open_memmap(scratch / f"{name}.npy", "w+", np.uint8, shape)


def video_pack(frames: Iterable[np.ndarray], n_frames: int, *, fps: float, size: tuple[int, int],
               scratch: Path, face_index: int = 0, where: str = "the video",
               progress: bool = False) -> tuple[AvatarPack, np.ndarray]:
    """The first n_frames RGB frames (H, W, 3) of a video -> (an in-memory AvatarPack over them rooted
    at `scratch`, found (N,) bool: frames where the face was seen).

    UserError when no frame shows a face. size = (W, H)."""
    from presenter.avatar.create import _references

    w, h = size
    pixels = _scratch_array(scratch, "frames", (n_frames, h, w, 3))
    crops = _scratch_array(scratch, "crops", (n_frames, CROP, CROP, 3))
    masks = _scratch_array(scratch, "mouth_mask", (n_frames, CROP, CROP))
    fitted: list[FittedFace | None] = []
    aligns = np.zeros((n_frames, 2, 3), np.float32)
    bar = tqdm(track_faces(frames, fps, face_index=face_index), total=n_frames, desc="tracking the face",
               unit="frame", leave=False, disable=not progress)
    for i, (rgb, face) in enumerate(bar):
        if i >= n_frames:
            break
        pixels[i] = rgb[:h, :w]
        fitted.append(face)
        if face is not None:
            aligns[i] = align_transform(face.verts_px, CROP)
            crops[i] = crop(rgb, aligns[i], CROP)
            masks[i] = np.round(mouth_mask(warp_points(face.verts_px, aligns[i]), CROP) * 255)
    found = np.array([f is not None for f in fitted], bool)
    if not found.any():
        raise UserError(f"no face found in {where} ({len(fitted)} frames); give a video in which one face "
                        "is clearly visible, roughly frontal")
    if len(fitted) < n_frames:
        raise UserError(f"{where}: only {len(fitted)} of {n_frames} frames could be decoded")
    filled = _fill_lost(fitted)
    for i in np.flatnonzero(~found):
        aligns[i] = align_transform(filled[i].verts_px, CROP)
    face = {
        "verts_px": np.stack([f.verts_px for f in filled]), "canon": np.stack([f.canon for f in filled]),
        "rotation": np.stack([f.rotation for f in filled]),
        "scale": np.array([f.scale for f in filled], np.float32),
        "translation": np.stack([f.translation for f in filled]), f"align_{CROP}": aligns,
    }
    seen = np.flatnonzero(found)
    refs = sorted({int(seen[j]) for j in _references(face["canon"][seen])})
    manifest = {"fps": round(fps), "n_frames": n_frames, "frame_size": [h, w], "crop_sizes": [CROP],
                "reference_indices": refs, "source": {"kind": "video", "file": where}}
    if not found.all():
        log.info("%s: no face in %d of %d frames; they pass through unchanged", where, int((~found).sum()), n_frames)
    return AvatarPack(scratch, manifest, pixels, face, {CROP: {"crops": crops, "mouth_mask": masks}}), found
