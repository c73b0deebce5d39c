"""Make avatar packs from a still portrait or a talking/idle video."""
from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from presenter import __version__
from presenter.avatar.idle import IdleMotion, idle_meshes
from presenter.avatar.pack import CROP_SIZES, FORMAT, VERSION, AvatarPack, load_pack, write_pack
from presenter.errors import UserError
from presenter.face.align import align_transform, crop, warp_points
from presenter.face.canonical import LEFT_EYE_LOWER, LEFT_EYE_UPPER, N_VERTICES
from presenter.face.fit import FittedFace, fit_face, fit_points, neutral_mesh, pose_mesh
from presenter.face.landmarker import MODEL_SHA256, FaceLandmarker, FaceObservation
from presenter.face.masks import face_mask, mouth_mask
from presenter.face.smoothing import OneEuroFilter
from presenter.face.warp import warp_image
from presenter.offline.judge import SEALED_MAX
from presenter.paths import home

log = logging.getLogger(__name__)

MAX_SIDE = 640          # frames are scaled down to this long side: live paste-back cost grows with it
MIN_FACE_PX = 64        # face width below which the 128 px crop would already be upsampled 2x
FPS = 25
MIN_VIDEO_S = 2.0
MAX_VIDEO_S = 10.0
N_REFERENCES = 4
DEFAULT_ATTRIBUTION = ("Astronaut Eileen Collins, NASA portrait (public domain), "
                       "as shipped in scikit-image (skimage.data.astronaut)")


def _progress(n: int, desc: str) -> tqdm:
    """range(n) with a progress bar when stderr is a terminal."""
    return tqdm(range(n), desc=desc, leave=False, disable=not sys.stderr.isatty())


def _fit_scale(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = MAX_SIDE / max(h, w)
    if s >= 1:
        return image
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def _pick_face(faces: list[FaceObservation], where: str) -> FaceObservation:
    if not faces:
        raise UserError(f"no face found in {where}; use a clear, roughly frontal photo or video of one face")
    if len(faces) > 1:
        log.warning("%s: found %d faces, using the largest (%.0f px wide)", where, len(faces), faces[0].width_px)
    if faces[0].width_px < MIN_FACE_PX:
        raise UserError(f"the face in {where} is {faces[0].width_px:.0f} px wide after scaling to {MAX_SIDE} px; "
                        f"at least {MIN_FACE_PX} px is needed: crop the image closer to the face")
    return faces[0]


def _eye_opening(canon: np.ndarray) -> np.ndarray:
    return (canon[..., list(LEFT_EYE_UPPER), 1] - canon[..., list(LEFT_EYE_LOWER), 1]).mean(-1)


def reference_frames(canons: np.ndarray) -> list[int]:
    """Evenly spread frames with the eyes open, as the generator's reference (texture) frames."""
    n = len(canons)
    eyes = _eye_opening(canons)
    ok = np.flatnonzero(eyes >= 0.8 * np.median(eyes))
    picks = [int(ok[np.argmin(np.abs(ok - c))]) for c in np.linspace(0, n - 1, N_REFERENCES)]
    return sorted(set(picks))


def _assemble(frames: np.ndarray, fitted: list[FittedFace], source: dict, attribution: str,
              loop: str, notes: list[str], out: Path, force: bool) -> Path:
    """Crops, masks, transforms and manifest for the idle-loop frames, then an atomic write."""
    n = len(frames)
    canon = np.stack([f.canon for f in fitted])
    verts = np.stack([f.verts_px for f in fitted])
    face = {
        "verts_px": verts, "canon": canon,
        "rotation": np.stack([f.rotation for f in fitted]),
        "scale": np.array([f.scale for f in fitted], np.float32),
        "translation": np.stack([f.translation for f in fitted]),
        "neutral": neutral_mesh(canon),
    }
    crops: dict[int, dict[str, np.ndarray]] = {}
    for s in CROP_SIZES:
        mats = np.stack([align_transform(v, s) for v in verts])
        face[f"align_{s}"] = mats
        c = np.empty((n, s, s, 3), np.uint8)
        mm = np.empty((n, s, s), np.uint8)
        fm = np.empty((n, s, s), np.uint8)
        for i in _progress(n, f"crops {s}px"):
            c[i] = crop(frames[i], mats[i], s)
            vc = warp_points(verts[i], mats[i])
            mm[i] = np.round(mouth_mask(vc, s) * 255)
            fm[i] = np.round(face_mask(vc, s) * 255)
        crops[s] = {"crops": c, "mouth_mask": mm, "face_mask": fm}
    refs = reference_frames(canon)
    manifest = {
        "format": FORMAT, "version": VERSION, "created_by": f"presenter {__version__}",
        "source": source, "attribution": attribution,
        "fps": FPS, "n_frames": n, "frame_size": list(frames.shape[1:3]),
        "crop_sizes": list(CROP_SIZES), "reference_indices": refs, "loop": loop,
        "landmarker_sha256": MODEL_SHA256, "notes": notes,
    }
    manifest["lip_gap"] = _lip_gaps(AvatarPack(out, manifest, frames, face, crops), refs)
    if manifest["lip_gap"]["sealed"] > SEALED_MAX:
        why = (f"a closed mouth drawn by the baseline renderer still reads as parted lips "
               f"(inner-lip gap {manifest['lip_gap']['sealed']:.3f} of the eye distance, sealed is <= {SEALED_MAX}): "
               "p/b/m will not look sealed on this avatar; a portrait with a calmer mouth, or the generator "
               "renderer, does better")
        log.warning("%s: %s", out, why)
        notes.append(why)
    root = write_pack(out, manifest, frames, face, crops, _preview(frames, crops[256], refs), force=force)
    _store_generator_styles(root)
    return root


def _store_generator_styles(root: Path) -> None:
    """Cache the installed generator's style codes in a new pack (nothing to do without a generator or torch)."""
    try:
        from presenter.models.generator import load_generator
        from presenter.render.generator import default_weights_dir, pack_styles
    except ImportError:
        return
    weights = default_weights_dir()
    if (weights / "model.sha256").is_file():
        pack_styles(load_pack(root), load_generator(weights), weights)


def _lip_gaps(pack: AvatarPack, frames: list[int]) -> dict[str, float]:
    """The landmarker's inner-lip gap (eye-distance units, DESIGN.md 7b) on the pack's own idle
    frames ("rest") and with the mouth commanded shut by the baseline renderer ("sealed"),
    medians over `frames`."""
    from presenter.offline.judge import mouth_openings
    from presenter.render.warp_baseline import WarpBaselineRenderer

    renderer = WarpBaselineRenderer(pack)
    shut = np.zeros((N_VERTICES, 3), np.float32)              # no displacement from the closed rest
    rest = mouth_openings(pack.frames[i] for i in frames)
    sealed = mouth_openings(renderer.render(i, shut) for i in frames)
    return {"rest": round(float(np.nanmedian(rest)), 4), "sealed": round(float(np.nanmedian(sealed)), 4)}


def _preview(frames: np.ndarray, c256: dict[str, np.ndarray], refs: list[int]) -> np.ndarray:
    tiles = []
    for i in np.linspace(0, len(frames) - 1, 4).astype(int):
        tiles.append(cv2.resize(frames[i], (round(256 * frames.shape[2] / frames.shape[1]), 256)))
    c = c256["crops"][refs[0]].astype(np.float32)
    tint = c256["mouth_mask"][refs[0], ..., None] / 255.0 * np.array([80, -40, -40])
    tiles.append(np.clip(c + tint, 0, 255).astype(np.uint8))
    return np.concatenate(tiles, axis=1)


def _file_source(path: Path) -> dict:
    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def create_from_image(path: str | Path, out: str | Path, *, motion: IdleMotion = IdleMotion(),
                      attribution: str = "", force: bool = False, _image: np.ndarray | None = None,
                      _source: dict | None = None) -> Path:
    """A pack from one portrait: the idle loop (blinks, sway, breathing) is synthesised by mesh warps."""
    path, out = Path(path), Path(out)
    if out.exists() and not force:
        raise UserError(f"output {out} already exists; choose another path or pass --force to replace it")
    if _image is None:
        if not path.is_file():
            raise UserError(f"image {path} does not exist")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"cannot read {path} as an image (PNG, JPEG, WebP, BMP, TIFF are supported)")
        image = bgr[..., ::-1]
    else:
        image = _image
    image = np.ascontiguousarray(_fit_scale(image))
    with FaceLandmarker("image") as lm:
        obs = _pick_face(lm.detect(image), str(path))
    base = fit_face(obs)
    meshes = idle_meshes(base.canon, motion)
    frames = np.empty((motion.n_frames,) + image.shape, np.uint8)
    fitted = []
    for i in _progress(motion.n_frames, "idle loop"):
        dst = pose_mesh(meshes[i], base.rotation, base.scale, base.translation)
        frames[i] = warp_image(image, base.verts_px, dst)
        # Back to MediaPipe's convention (z smaller = nearer) to refit the pose-free mesh.
        fitted.append(fit_points(dst * np.array([1.0, 1.0, -1.0], np.float32), base.matrix))
    source = _source or {"kind": "image", **_file_source(path)}
    return _assemble(frames, fitted, source, attribution or f"user-supplied image {path.name}",
                     "synthesised seamless loop", [], out, force)


def _decode_video(path: Path) -> tuple[np.ndarray, float]:
    """Frames (N, H, W, 3) resampled to FPS by nearest timestamp, at most MAX_VIDEO_S."""
    import av

    if not path.is_file():
        raise UserError(f"video {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path} has no video stream (audio-only?); give a video of a face")
            stream = container.streams.video[0]
            frames, times = [], []
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if frame.time > MAX_VIDEO_S + 1.0 / FPS:
                    break
                frames.append(_fit_scale(np.ascontiguousarray(frame.to_ndarray(format="rgb24"))))
                times.append(frame.time)
    except av.error.FFmpegError as e:
        raise UserError(f"cannot decode {path}: {e}; is it a complete video file?") from None
    if not frames:
        raise UserError(f"{path}: no decodable video frames")
    times_a = np.asarray(times) - times[0]
    grid = np.arange(0, times_a[-1] + 1e-6, 1.0 / FPS)
    picks = np.searchsorted(times_a, grid).clip(0, len(frames) - 1)
    return np.stack([frames[i] for i in picks]), float(times_a[-1])


def _loop_point(frames: np.ndarray, verts: np.ndarray) -> int:
    """The end index j (exclusive) whose next frame would best match frame 0."""
    n = len(frames)
    lo = max(int(MIN_VIDEO_S * FPS), int(0.6 * n))
    thumbs = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32)
    img_d = np.abs(thumbs[lo:] - thumbs[0]).mean(axis=(1, 2, 3))
    mesh_d = np.abs(verts[lo:, :, :2] - verts[0, :, :2]).mean(axis=(1, 2))
    return lo + int(np.argmin(img_d / (img_d.mean() + 1e-6) + mesh_d / (mesh_d.mean() + 1e-6)))


def create_from_video(path: str | Path, out: str | Path, *, attribution: str = "", force: bool = False,
                      loop: bool = True) -> Path:
    """A pack from a video of the person: its frames, tracked and smoothed, cut at a seamless loop point
    (loop=False keeps every tracked frame: footage to learn from, not an idle loop)."""
    path, out = Path(path), Path(out)
    if out.exists() and not force:
        raise UserError(f"output {out} already exists; choose another path or pass --force to replace it")
    frames, _ = _decode_video(path)
    smooth = OneEuroFilter()
    fitted, notes = [], []
    with FaceLandmarker("video") as lm:
        for i in _progress(len(frames), "tracking"):
            faces = lm.detect(frames[i], timestamp_ms=i * 1000 // FPS)
            if not faces:
                notes.append(f"no face from frame {i} ({i / FPS:.2f} s): the loop stops there")
                break
            obs = _pick_face(faces, f"{path} frame {i}") if i == 0 else faces[0]
            fitted.append(fit_points(smooth(obs.landmarks, 1.0 / FPS), obs.matrix))
    if len(fitted) < MIN_VIDEO_S * FPS:
        raise UserError(f"{path}: a face is visible for only {len(fitted) / FPS:.1f} s; "
                        f"at least {MIN_VIDEO_S:.0f} s of one visible face is needed")
    frames = frames[:len(fitted)]
    end = _loop_point(frames, np.stack([f.verts_px for f in fitted])) if loop else len(frames)
    for n in notes:
        log.warning("%s: %s", path, n)
    return _assemble(frames[:end], fitted[:end], {"kind": "video", **_file_source(path)},
                     attribution or f"user-supplied video {path.name}", f"video frames 0-{end - 1}" + (", loop point by match" if loop else ", every tracked frame"),
                     notes, out, force)


def default_pack_path() -> Path:
    return home() / "avatars" / "default"


def default_pack() -> AvatarPack:
    """The default avatar (scikit-image's public-domain astronaut portrait), made on first use."""
    root = default_pack_path()
    if not (root / "manifest.json").is_file():
        from skimage import data

        log.info("making the default avatar pack in %s (first run only)", root)
        create_from_image("astronaut.png", root, attribution=DEFAULT_ATTRIBUTION, _image=data.astronaut(),
                          _source={"kind": "image", "file": "skimage.data.astronaut()"}, force=root.exists())
    return load_pack(root)
