"""A user's video as the renderers see an avatar pack: per frame the face is tracked, fitted and aligned.

The renderers (`presenter.render`) draw the mouth into frame `index` of an `AvatarPack`: its frame,
its fitted mesh and pose, its 256 px aligned crop and lower-face mask. `video_pack` builds exactly
that from the frames of a video, at the video's own size, so the live path's renderers dub a video
without a line of their own changed. Frames (and crops) live in memory-mapped files in a scratch
folder; a long video is packed a chunk at a time (`presenter.offline.lipsync`).

Legend: N frames, H, W frame size in pixels, V = 468 mesh vertices, S = 256 crop side.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from presenter.avatar.pack import AvatarPack
from presenter.errors import UserError
from presenter.face.align import align_transform, crop, warp_points
from presenter.face.fit import FittedFace, fit_points
from presenter.face.landmarker import FaceLandmarker, FaceObservation
from presenter.face.masks import mouth_mask
from presenter.face.smoothing import OneEuroFilter

CROP = 256                 # the renderers' crop side


class FaceFinder:
    """Faces in the frames of a video, small ones too, each followed from frame to frame.

    MediaPipe's detector is short-range: it sees the whole frame at 128 px, so a 130 px face in a
    1280x720 frame (a speaker in a wide shot) is never found there. So a face, once found, is looked
    for around where it was (a square ROI_SCALE times its width, scaled to DETECT_PX: small faces
    are seen large; the face nearest the square's middle is the same face). A face is found in the
    first place in the whole frame, then, when that shows fewer than face_index + 1 faces, in square
    windows of the frame's short side and half of it (while no face is seen, every SEARCH_EVERY
    frames: footage without a face stays cheap); faces are ranked by width there, largest first.
    Landmarks come back in frame pixels. IMAGE mode: each frame stands alone (no tracking lag)."""

    ROI_SCALE = 2.2        # the square searched around the last face, in face widths
    DETECT_PX = 512        # a searched square is scaled to this side
    SEARCH_EVERY = 12      # while no face is seen, the windows (up to ~20 detections) are searched every this many frames

    def __init__(self, *, face_index: int = 0) -> None:
        self.face_index = face_index
        self._lm = FaceLandmarker("image", max_faces=face_index + 2)
        self._last: tuple[int, int, int] | None = None         # (x0, y0, side) around the face followed
        self._since_search = self.SEARCH_EVERY                  # frames since the windows were last searched

    def close(self) -> None:
        self._lm.close()

    def __enter__(self) -> FaceFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def find(self, rgb: np.ndarray) -> FaceObservation | None:
        """The face followed (at first: the face_index-th largest) in an RGB frame (H, W, 3), or None."""
        if self._last is not None:
            x0, y0, side = self._last
            near = self._detect(rgb, self._last)
            if near:
                mid = np.array([x0 + side / 2, y0 + side / 2])
                return self._follow(min(near, key=lambda f: np.linalg.norm(_centre(f) - mid)))
        h, w = rgb.shape[:2]
        faces = self._detect(rgb, (0, 0, max(h, w)))
        self._since_search += 1
        if len(faces) <= self.face_index and self._since_search >= self.SEARCH_EVERY:
            self._since_search = 0
            for box in _windows(h, w):
                faces = _merge(faces, self._detect(rgb, box))
                if len(faces) > self.face_index:
                    break
        if len(faces) <= self.face_index:
            self._last = None
            return None
        return self._follow(sorted(faces, key=lambda f: -f.width_px)[self.face_index])

    def _follow(self, obs: FaceObservation) -> FaceObservation:
        side = int(self.ROI_SCALE * obs.width_px)
        cx, cy = _centre(obs)
        self._last = (int(cx - side / 2), int(cy - side / 2), side)
        return obs

    def _detect(self, rgb: np.ndarray, box: tuple[int, int, int]) -> list[FaceObservation]:
        """Faces in the square (x0, y0, side) of the frame (clipped to it), scaled up or down to DETECT_PX."""
        x0, y0, side = box
        h, w = rgb.shape[:2]
        xa, ya, xb, yb = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
        if xb - xa < 32 or yb - ya < 32:
            return []
        scale = self.DETECT_PX / max(xb - xa, yb - ya)
        part = np.ascontiguousarray(rgb[ya:yb, xa:xb])
        if abs(scale - 1) > 0.05:
            part = cv2.resize(part, (round((xb - xa) * scale), round((yb - ya) * scale)),
                              interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        out = []
        for obs in self._lm.detect(part):
            pts = obs.landmarks / np.float32(scale)                    # x, y and z (pixels, like x)
            pts[:, 0] += xa
            pts[:, 1] += ya
            out.append(FaceObservation(pts, obs.matrix, obs.blendshapes))
        return out


def _centre(face: FaceObservation) -> np.ndarray:
    """(2,) the middle of a face's landmarks' box, pixels."""
    p = face.landmarks[:, :2]
    return (p.min(0) + p.max(0)) / 2


def _merge(faces: list[FaceObservation], more: list[FaceObservation]) -> list[FaceObservation]:
    """faces and those of `more` that are not one of them (centres closer than half a face width are one)."""
    out = list(faces)
    for f in more:
        if all(np.linalg.norm(_centre(f) - _centre(g)) > 0.5 * max(f.width_px, g.width_px) for g in out):
            out.append(f)
    return out


def _windows(h: int, w: int) -> list[tuple[int, int, int]]:
    """Squares of the frame's short side and of half of it, overlapping by half, large ones first."""
    out = []
    for side in (min(h, w), min(h, w) // 2):
        xs = range(0, max(w - side, 0) + 1, max(side // 2, 1))
        ys = range(0, max(h - side, 0) + 1, max(side // 2, 1))
        out += [(x, y, side) for y in ys for x in xs]
    return out


def track_faces(frames: Iterable[np.ndarray], fps: float, *, face_index: int = 0,
                smooth: bool = True) -> Iterator[tuple[np.ndarray, FittedFace | None]]:
    """(frame, its fitted face or None where no face is seen) for each RGB frame (H, W, 3) of a video.

    face_index: 0 the largest face when first seen, 1 the next... (then that face is followed). smooth: a One-Euro filter on the
    landmarks (steady crops; it lags fast lip motion by about a frame, so a driver video's mouth
    is read unsmoothed), restarted after frames without a face."""
    smoother = OneEuroFilter()
    with FaceFinder(face_index=face_index) as finder:
        for rgb in frames:
            obs = finder.find(rgb)
            if obs is None:
                smoother.reset()
                yield rgb, None
                continue
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


def video_pack(tracked: Iterable[tuple[np.ndarray, FittedFace | None]], n_frames: int, *, fps: float,
               size: tuple[int, int], scratch: Path, root: Path, where: str = "the video") -> tuple[np.ndarray, AvatarPack | None, np.ndarray]:
    """n_frames (frame (H, W, 3), its fitted face or None) of a video (`track_faces`) -> (the frames
    (N, H, W, 3), an in-memory AvatarPack over them or None when no frame shows a face, found (N,) bool).

    Arrays live in memory-mapped files in `scratch`; the pack is rooted at `root` (where a renderer may
    cache what it derives from the person: chunks of one video share it). size = (W, H)."""
    from presenter.avatar.create import reference_frames

    w, h = size
    pixels = _scratch_array(scratch, "frames", (n_frames, h, w, 3))
    crops = _scratch_array(scratch, "crops", (n_frames, CROP, CROP, 3))
    masks = _scratch_array(scratch, "mouth_mask", (n_frames, CROP, CROP))
    fitted: list[FittedFace | None] = []
    aligns = np.zeros((n_frames, 2, 3), np.float32)
    for i, (rgb, face) in enumerate(tracked):
        pixels[i] = rgb[:h, :w]
        fitted.append(face)
        if face is not None:
            aligns[i] = align_transform(face.verts_px, CROP)
            crops[i] = crop(rgb, aligns[i], CROP)
            masks[i] = np.round(mouth_mask(warp_points(face.verts_px, aligns[i]), CROP) * 255)
    if len(fitted) < n_frames:
        raise UserError(f"{where}: only {len(fitted)} of {n_frames} frames could be decoded")
    found = np.array([f is not None for f in fitted], bool)
    if not found.any():
        return pixels, None, found
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
    refs = sorted({int(seen[j]) for j in reference_frames(face["canon"][seen])})
    manifest = {"fps": round(fps), "n_frames": n_frames, "frame_size": [h, w], "crop_sizes": [CROP],
                "reference_indices": refs, "source": {"kind": "video", "file": where}}
    return pixels, AvatarPack(root, manifest, pixels, face, {CROP: {"crops": crops, "mouth_mask": masks}}), found
