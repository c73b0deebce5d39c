"""`presenter lipsync`: dub a video or a still with new speech, on the live path's driver and renderer.

    face (video or image) + audio -> mouth driver (SyncFormer / loudness, as live) -> poses at 25 fps
    -> poses at the output's frame rate -> renderer (generator / warp, as live) per frame
    -> invisible watermark (job id) -> H.264 + AAC MP4 tagged SYNTHETIC, written atomically

A still becomes an avatar pack in a scratch folder (as `presenter avatar create --image` makes one)
and its idle loop is rendered with the driven mouth, at 25 fps. A video keeps its frame rate and
size: each frame's face is tracked, fitted and aligned (`presenter.offline.faces.video_pack`), the
mouth drawn and pasted back; frames without a face pass through unchanged. Audio longer than the
video plays the video back and forth; shorter audio cuts it, and the video is then packed and drawn
CHUNK_FRAMES at a time, so memory and scratch space do not grow with its length.

The driver and renderer come from the live pipeline's factories (`presenter.stream.pipeline`), so
`--engine` and `--renderer` mean what they mean to the server, and a new engine or renderer
registered there serves here too.

Video-driven (`--driver VIDEO`): the driver video's faces are fitted per frame; its mouth motion is each
frame's pose-free mesh minus the driver's own neutral mesh (lower face only), added to the target's
closed rest as a SyncFormer's displacements would be; the driver's soundtrack is muxed.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from presenter import __version__
from presenter.errors import UserError
from presenter.motion.base import FPS as DRIVER_FPS, SAMPLE_RATE, MouthDriver, is_rest
from presenter.offline.media import (SYNTHETIC_TAG, Audio, MovieWriter, VideoInfo, probe_video, read_audio,
                                     read_frames)
from presenter.render.base import Renderer
from presenter.stream.pipeline import ENGINES
from presenter.watermark import Payload, Watermark, new_payload

log = logging.getLogger(__name__)

PUSH_S = 1.0               # audio is fed to the driver in chunks of this many seconds
CHUNK_FRAMES = 100         # a video dubbed in order is packed this many frames at a time


@dataclass(frozen=True)
class LipsyncOptions:
    face: Path                       # video or image of the face to dub
    audio: Path | None               # speech: any file with an audio track PyAV decodes
    output: Path                     # .mp4 to write
    driver: Path | None = None       # instead of audio: a talking-face video whose mouth motion is followed
    engine: str = "auto"             # mouth driver, as the server's --engine
    renderer: str = "auto"           # face renderer, as the server's --renderer
    face_index: int = 0              # 0: the largest face where first seen, 1: the next... (then followed)
    style: Path | None = None        # reference talking clip whose speaking style the SyncFormer takes
    force: bool = False              # replace an existing output

    def resolved(self) -> dict:
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LipsyncResult:
    output: Path
    frames: int
    fps: float
    size: tuple[int, int]            # (W, H) pixels
    duration_s: float                # of the output's video
    compute_s: float                 # wall time of the whole job
    render_s: float                  # of which drawing, marking and encoding the frames
    cpu_s: float                     # CPU time of the process over the job, all threads (load-independent)
    job_id: int                      # the watermark's payload id
    engine: str                      # the driver actually used
    renderer: str                    # the renderer actually used
    frames_without_face: int         # output frames passed through unchanged
    poses: np.ndarray = field(repr=False)   # (frames, ...) the mouth pose drawn in each output frame (None: rest)

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time / output duration (< 1: faster than real time)."""
        return self.compute_s / self.duration_s

    @property
    def cpu_per_s(self) -> float:
        """CPU seconds per second of output: the real-time factor on one idle core (busy machines inflate rtf)."""
        return self.cpu_s / self.duration_s

    @property
    def render_rtf(self) -> float:
        """Real-time factor of the per-frame work alone (without loading models and fitting the face)."""
        return self.render_s / self.duration_s


def check_output(path: Path, force: bool) -> None:
    """UserError when the output exists (without force) or cannot be written there."""
    if path.exists() and not force:
        raise UserError(f"output {path} already exists; choose another path or pass --force to replace it")
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name ending in .mp4")
    if not path.parent.is_dir():
        raise UserError(f"output folder {path.parent} does not exist")


def check_face_index(index: int) -> None:
    """UserError for a negative --face-index (0 is the largest face)."""
    if index < 0:
        raise UserError(f"--face-index {index}: use 0 (the largest face) or more")


def drive(driver: MouthDriver, audio_16k: np.ndarray, *, progress: bool = False) -> np.ndarray:
    """Speech (n,) float32 16 kHz -> poses (F, ...) at 25 fps, F = ceil(n / 640), from a streaming driver."""
    step = int(PUSH_S * SAMPLE_RATE)
    starts = tqdm(range(0, len(audio_16k), step), desc="speech to mouth motion", unit="s", leave=False,
                  disable=not progress)
    out = [driver.push(audio_16k[i:i + step]) for i in starts]
    out.append(driver.flush())
    return np.concatenate(out)


def poses_at(poses: np.ndarray, fps: float, n_frames: int, *, rate: float = DRIVER_FPS) -> np.ndarray:
    """Poses (F, ...) at `rate` (the audio drivers' 25 fps) -> (n_frames, ...) at fps: linear between the
    two pose frames around each output frame's middle (exact when fps == rate; rest stays exactly rest)."""
    t = (np.arange(n_frames) + 0.5) / fps * rate - 0.5
    lo = np.clip(np.floor(t).astype(int), 0, len(poses) - 1)
    hi = np.clip(lo + 1, 0, len(poses) - 1)
    w = np.clip(t - lo, 0, 1).reshape((-1,) + (1,) * (poses.ndim - 1)).astype(np.float32)
    return poses[lo] * (1 - w) + poses[hi] * w


def ping_pong(t: int, n: int) -> int:
    """Output frame t -> source frame of an n-frame video played forwards, backwards, forwards..."""
    if n <= 1:
        return 0
    p = t % (2 * n - 2)
    return p if p < n else 2 * n - 2 - p


def is_image(path: Path) -> bool:
    """True when OpenCV reads the file as a still image."""
    return path.is_file() and cv2.haveImageReader(str(path)) and cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is not None


@dataclass(frozen=True)
class _Face:
    """What a stretch of output frames [start, stop) is drawn on: a pack's frames, its renderer (None where
    no frame of it shows a face), the pack frame of each output frame and where the face is seen."""
    frames: np.ndarray                           # (N, H, W, 3) the pack's frames
    renderer: Renderer | None
    renderer_kind: str                           # "generator" / "baseline"; "" without a renderer
    source: Callable[[int], int]                 # output frame -> pack frame
    found: np.ndarray | None                     # (N,) bool per pack frame; None: always
    start: int
    stop: int


def _still(path: Path, renderer: str, scratch: Path, n_out: int) -> Iterator[_Face]:
    """An image -> an avatar pack in scratch (idle loop, 25 fps) and its renderer, for all n_out frames."""
    from presenter.avatar.create import create_from_image
    from presenter.avatar.pack import load_pack
    from presenter.stream.pipeline import make_renderer

    pack = load_pack(create_from_image(path, scratch / "pack", attribution=f"lipsync input {path.name}"))
    kind, r = make_renderer(renderer, pack)
    yield _Face(pack.frames, r, kind, lambda t: t % pack.n_frames, None, 0, n_out)


def _video(path: Path, info: VideoInfo, renderer: str, scratch: Path, n_out: int, face_index: int,
           progress: bool) -> Iterator[_Face]:
    """A video -> its frames as in-memory packs with their renderers, a chunk at a time.

    Audio no longer than the video: chunks of CHUNK_FRAMES frames in order (scratch space and the
    renderers' per-frame caches stay bounded; the tracker runs on across chunks). Longer audio plays
    the video back and forth, so every frame it needs is packed at once. UserError when no frame shows
    a face (at once for one pack; for chunks, at the end: the output is then not kept)."""
    from presenter.offline.faces import track_faces, video_pack
    from presenter.stream.pipeline import make_renderer

    n = min(info.n_frames, n_out)
    decoded = read_frames(path, n)
    frames = tqdm(decoded, total=n, desc="tracking the face", unit="frame", leave=False, disable=not progress)
    tracked = track_faces(frames, float(info.fps), face_index=face_index)
    whole = n < n_out
    chunk = n if whole else CHUNK_FRAMES
    seen = 0
    try:
        for k, start in enumerate(range(0, n, chunk)):
            size = min(chunk, n - start)
            folder = scratch / f"chunk{k % 2}"           # one chunk is drawn while the next is packed
            folder.mkdir(exist_ok=True)
            pixels, pack, found = video_pack(islice(tracked, size), size, fps=float(info.fps),
                                             size=(info.width, info.height), scratch=folder, root=scratch,
                                             where=str(path))
            seen += int(found.sum())
            if whole and pack is None:
                break
            kind, r = make_renderer(renderer, pack) if pack is not None else ("", None)
            source = (lambda t: ping_pong(t, n)) if whole else (lambda t, s=start: t - s)
            yield _Face(pixels, r, kind, source, found, start, n_out if whole else start + size)
    finally:
        # islice leaves the tracker suspended: close its landmarker and the file here, in this thread
        # (closed later by the garbage collector in another thread, MediaPipe hung).
        tracked.close()
        decoded.close()
        frames.close()
    if not seen:
        raise UserError(f"no face found in {path} ({n} frames); give a video in which one face is clearly "
                        "visible, roughly frontal")
    if seen < n:
        log.info("%s: no face in %d of %d frames; they pass through unchanged", path, n - seen, n)


@dataclass(frozen=True)
class _Motion:
    """The mouth poses a job draws: (F, ...) at `rate` frames per second, and who made them."""
    poses: np.ndarray
    rate: float
    engine: str                      # the engine actually used ("video" for a driver video)
    name: str                        # the driver's name, for people


def clip_motion(path: Path, *, face_index: int = 0, progress: bool = False,
                what: str = "clip") -> tuple[np.ndarray, np.ndarray, Fraction]:
    """A talking clip -> (motion (T, V, 3) cm, found (T,) bool, fps): each frame's pose-free mesh minus the
    clip's own neutral mesh (zeros where no face is seen). Head pose and the person's face shape drop out;
    what is left is how the mouth moves: the SyncFormer's style input and a driver video's motion."""
    from presenter.face.canonical import N_VERTICES
    from presenter.face.fit import motion_from_neutral
    from presenter.offline.faces import track_faces

    info = probe_video(path)
    frames = tqdm(read_frames(path), total=info.n_frames, desc=f"reading the {what}", unit="frame",
                  leave=False, disable=not progress)
    fitted = [f for _, f in track_faces(frames, float(info.fps), face_index=face_index, smooth=False)]
    found = np.array([f is not None for f in fitted], bool)
    if found.sum() < float(info.fps):
        raise UserError(f"{what} {path}: a face is seen in {int(found.sum())} frames; at least 1 s of one talking "
                        "face is needed")
    canons = np.stack([f.canon for f in fitted if f is not None])
    motion = np.zeros((len(fitted), N_VERTICES, 3), np.float32)
    motion[found] = motion_from_neutral(canons)
    return motion, found, info.fps


def style_reference(path: Path, *, face_index: int = 0, progress: bool = False) -> np.ndarray:
    """A talking clip -> its mouth motion (T, V, 3) cm, what the SyncFormer's style encoder reads
    (`SyncFormerDriver.set_style`)."""
    motion, found, _ = clip_motion(path, face_index=face_index, progress=progress, what="style clip")
    return motion[found]


def _lower_face_weight() -> np.ndarray:
    """(V,) float32: 1 below the nose, 0 above: the part of a driver's motion a mouth takes (blinks stay home)."""
    from presenter.face.canonical import N_VERTICES
    from presenter.face.masks import lower_face_ids

    w = np.zeros(N_VERTICES, np.float32)
    w[lower_face_ids()] = 1.0
    return w


def _soundtrack(opts: LipsyncOptions) -> Audio:
    """The output's sound: --audio, or the driver video's soundtrack (silence, with a warning, when it has none)."""
    if opts.driver is None:
        return read_audio(opts.audio)
    try:
        return read_audio(opts.driver)
    except UserError as e:
        info = probe_video(opts.driver)
        log.warning("%s; the output's soundtrack is silence", e)
        return Audio(np.zeros((round(info.n_frames / float(info.fps) * SAMPLE_RATE), 1), np.float32), SAMPLE_RATE)


@lru_cache(maxsize=len(ENGINES))
def _drivers(engine: str) -> tuple[str, Callable[[], MouthDriver]]:
    """The live pipeline's driver factory for an engine, loaded once per process (a batch's rows share the
    read-only models; each job still gets a fresh driver)."""
    from presenter.stream.pipeline import driver_factory

    return driver_factory(engine)


def _audio_motion(opts: LipsyncOptions, audio: Audio, progress: bool) -> _Motion:
    """--audio: the poses the chosen engine drives from the speech (with --style's speaking style)."""
    engine, new_driver = _drivers(opts.engine)
    driver = new_driver()
    if opts.style is not None:
        if not hasattr(driver, "set_style"):
            raise UserError(f"--style needs a driver with speaking styles (--engine syncformer); "
                            f"the {driver.name} has none")
        driver.set_style(style_reference(opts.style, progress=progress))
    return _Motion(drive(driver, audio.analysis(), progress=progress), float(DRIVER_FPS), engine, driver.name)


def _video_motion(opts: LipsyncOptions, progress: bool) -> _Motion:
    """--driver: the driver video's lower-face motion from its own neutral, drawn on the target's closed rest."""
    assert opts.driver is not None
    motion, _, fps = clip_motion(opts.driver, progress=progress, what="driver video")
    poses = motion * _lower_face_weight()[None, :, None]
    return _Motion(poses, float(fps), "video", f"video-driven ({opts.driver.name})")


def lipsync(opts: LipsyncOptions, *, progress: bool = False) -> LipsyncResult:
    """Run one dubbing job; see the module docstring. Bad input raises UserError before anything is written."""
    t0, cpu0 = time.monotonic(), time.process_time()
    check_output(opts.output, opts.force)
    check_face_index(opts.face_index)
    if (opts.audio is None) == (opts.driver is None):
        raise UserError("give exactly one of --audio FILE (speech) or --driver VIDEO (a talking face to follow)")
    if opts.driver is not None and opts.style is not None:
        raise UserError("--style sets the SyncFormer's speaking style: use it with --audio, not --driver")
    if not opts.face.is_file():
        raise UserError(f"face {opts.face} does not exist")
    info = None if is_image(opts.face) else probe_video(opts.face)       # an unreadable face file fails here
    if info is None and opts.face_index:
        raise UserError("--face-index picks a face in a video; a photo's largest face is used: crop the photo "
                        "to the face you want")
    audio = _soundtrack(opts)
    job = new_payload()                                  # this presenter's version and a random job id
    # The face (tracking, renderer) is made while the mouth motion is computed: two cores, two stages.
    with tempfile.TemporaryDirectory(prefix="presenter-lipsync-") as scratch, ThreadPoolExecutor(1) as pool:
        if info is None:
            n_out, fps = _frames_for(audio, Fraction(DRIVER_FPS)), Fraction(DRIVER_FPS)
            faces = _still(opts.face, opts.renderer, Path(scratch), n_out)
            size = None
        else:
            n_out, fps = _frames_for(audio, info.fps), info.fps
            faces = _video(opts.face, info, opts.renderer, Path(scratch), n_out, opts.face_index, progress)
            size = (info.width, info.height)
        first = pool.submit(next, faces)
        motion = _video_motion(opts, progress) if opts.driver else _audio_motion(opts, audio, progress)
        log.info("mouth motion: %d poses from %s in %.1f s", len(motion.poses), motion.name, time.monotonic() - t0)
        face = first.result()
        log.info("face: %s ready after %.1f s", face.renderer_kind or "no face yet", time.monotonic() - t0)
        if size is None:
            size = face.frames.shape[2], face.frames.shape[1]
        result = _render(opts, audio, motion, face, faces, pool, _Output(n_out, fps, size), job, progress, t0, cpu0)
    log.info("wrote %s: %d frames %dx%d at %.3g fps (%.2f s), mouth %s, renderer %s, watermark job id %08x; "
             "%.1f s of compute: real-time factor %.2f (frames alone: %.2f; %.2f CPU s per s of video; load average %.1f)",
             result.output, result.frames, *result.size, result.fps, result.duration_s, motion.name, result.renderer,
             job.run_id, result.compute_s, result.rtf, result.render_rtf, result.cpu_per_s, os.getloadavg()[0])
    return result


def _frames_for(audio: Audio, fps: Fraction) -> int:
    return max(1, round(audio.duration_s * float(fps)))


@dataclass(frozen=True)
class _Output:
    frames: int
    fps: Fraction
    size: tuple[int, int]                        # (W, H)


def _provenance(opts: LipsyncOptions, motion: _Motion, renderer: str, job_id: int) -> dict:
    """What made the file, for its metadata: presenter version, job id, the inputs by file name (never a
    folder: a shared file should not carry the maker's paths), engine and renderer as resolved."""
    inputs = {k: v.name for k, v in (("face", opts.face), ("audio", opts.audio), ("driver", opts.driver),
                                     ("style", opts.style)) if v is not None}
    return {"synthetic": True, "made_by": f"presenter {__version__}", "job_id": f"{job_id:08x}", "inputs": inputs,
            "engine": motion.engine, "renderer": renderer}


def _render(opts: LipsyncOptions, audio: Audio, motion: _Motion, face: _Face, more: Iterator[_Face],
            pool: ThreadPoolExecutor, out_spec: _Output, job: Payload, progress: bool, t0: float,
            cpu0: float) -> LipsyncResult:
    """Draw every output frame (from `face`, then each of `more`, packed in the pool while the one before
    is drawn), mark it with the job's payload and write the movie."""
    n_out = out_spec.frames
    drawn = poses_at(motion.poses, float(out_spec.fps), n_out, rate=motion.rate)
    mark, job_id = Watermark(job), job.run_id
    # Where the first stretch shows no face, the renderer is known only later: the option names it.
    renderer = face.renderer_kind or opts.renderer
    tags = {"title": f"{SYNTHETIC_TAG} (lip-synced)",
            "comment": f"{SYNTHETIC_TAG} {__version__}: mouth re-animated; mouth: {motion.name}; "
                       f"renderer: {face.renderer.name if face.renderer else renderer}; watermark job id "
                       f"{job_id:08x} (check with 'presenter verify FILE')",
            "description": json.dumps(_provenance(opts, motion, renderer, job_id))}
    lost, t_render = 0, time.monotonic()
    bar = tqdm(total=n_out, desc="rendering", unit="frame", leave=False, disable=not progress)
    with MovieWriter(opts.output, fps=out_spec.fps, width=out_spec.size[0], height=out_spec.size[1], audio=audio,
                     tags=tags) as out:
        while face is not None:
            following = pool.submit(next, more, None)
            for t in range(face.start, face.stop):
                i = face.source(t)
                seen = face.renderer is not None and (face.found is None or bool(face.found[i]))
                lost += not seen
                if seen:
                    rgb = face.renderer.render(i, None if is_rest(drawn[t]) else drawn[t])
                else:
                    rgb = face.frames[i]
                out.write(mark.mark_rgb(rgb))
                bar.update()
            face = following.result()
        out.commit()
    bar.close()
    return LipsyncResult(opts.output, n_out, float(out_spec.fps), out_spec.size, n_out / float(out_spec.fps),
                         time.monotonic() - t0, time.monotonic() - t_render, time.process_time() - cpu0, job_id,
                         motion.engine, renderer, lost, drawn)
