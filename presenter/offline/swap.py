"""`presenter swap`: one person's face on another's video, only with a consent statement.

    source (image or video) -> aligned face crops (the generator's style) + the source's neutral mesh
    target video -> faces tracked and fitted per frame -> the target's neutral mesh
    each frame: the target's expression on the source's shape, drawn by the swap generator
    (`presenter.render.swap`) -> invisible watermark (job id) -> H.264 + AAC MP4 tagged SYNTHETIC,
    with the consent statement, the inputs' sha256 and the time in its metadata, written atomically

Frames where no face is seen pass through unchanged; the target's soundtrack is kept (a target
without one gets a silent track). The target is read twice (tracking, then drawing), so its
frames are not held: only each frame's fitted face mesh is (a few kB per frame).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from presenter import __version__
from presenter.errors import UserError
from presenter.offline.lipsync import check_face_index, check_output, is_image
from presenter.offline.media import SYNTHETIC_TAG, Audio, MovieWriter, probe_video, read_audio, read_frames
from presenter.watermark import Watermark, new_payload

log = logging.getLogger(__name__)

MIN_CONSENT_CHARS = 20     # a statement, not a token: who agreed to what
SOURCE_REFERENCES = 8      # reference crops taken from a source video, spread over it
SOURCE_SCAN_FRAMES = 250   # frames of a source video searched for them


@dataclass(frozen=True)
class SwapOptions:
    source: Path                  # image or video of the face to put in
    target: Path                  # video whose face is replaced
    output: Path                  # .mp4 to write
    consent: str | None           # statement that the people shown agreed
    force: bool = False
    weights: Path | None = None   # swap generator folder (default: the shipped one)
    face_index: int = 0           # which target face: 0 the largest


@dataclass(frozen=True)
class SwapResult:
    output: Path
    frames: int
    swapped: int                  # frames where the target's face was seen and replaced
    job_id: int
    seconds: float


def check_consent(statement: str | None) -> str:
    """The stripped consent statement, or UserError saying what is needed."""
    text = (statement or "").strip()
    if not text:
        raise UserError("presenter swap puts one person's face into another's video: it needs --consent "
                        "\"STATEMENT\" saying that both people agreed (who, to what, when); the statement is stored "
                        "in the output's metadata with hashes of the inputs and the time")
    if len(text) < MIN_CONSENT_CHARS:
        raise UserError(f"--consent {text!r} is too short ({len(text)} characters, at least {MIN_CONSENT_CHARS}): "
                        "say who agreed to what, e.g. \"Ana Lima and Ben Okoro agreed on 2026-12-01 to this swap "
                        "for the course trailer\"")
    return text


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_faces(path: Path, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """The source's aligned crops (K, S, S, 3) and neutral mesh (V, 3) cm, from an image or a video."""
    from presenter.face.fit import fit_face, neutral_mesh
    from presenter.offline.faces import FaceFinder, track_faces
    from presenter.render.swap import face_crop

    if is_image(path):
        rgb = np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])
        with FaceFinder() as finder:
            obs = finder.find(rgb)
        if obs is None:
            raise UserError(f"--source {path}: no face found; give a photo where one face is clearly visible")
        fitted = fit_face(obs)
        return face_crop(rgb, fitted.verts_px)[0][None], fitted.canon
    info = probe_video(path)
    frames = tqdm(read_frames(path, limit=SOURCE_SCAN_FRAMES), total=min(info.n_frames, SOURCE_SCAN_FRAMES),
                  desc="reading the source", unit="frame", leave=False, disable=not progress)
    seen = [(rgb, f) for rgb, f in track_faces(frames, float(info.fps)) if f is not None]
    if not seen:
        raise UserError(f"--source {path}: no face found in its first {SOURCE_SCAN_FRAMES} frames")
    picks = np.unique(np.linspace(0, len(seen) - 1, SOURCE_REFERENCES).round().astype(int))
    crops = np.stack([face_crop(seen[i][0], seen[i][1].verts_px)[0] for i in picks])
    return crops, neutral_mesh(np.stack([f.canon for _, f in seen]))


def _soundtrack(path: Path, duration_s: float) -> Audio:
    """The target's audio, or silence as long as the video when it has none."""
    try:
        return read_audio(path)
    except UserError as e:
        if "no audio track" not in str(e):
            raise
        log.info("target %s has no audio track: the output gets a silent one", path)
        return Audio(np.zeros((max(1, round(duration_s * 48000)), 1), np.float32), 48000)


def swap(opts: SwapOptions, *, progress: bool = False) -> SwapResult:
    """Check consent and inputs, then make the swap; see the module docstring. Bad input raises
    UserError before anything is written."""
    from presenter.face.fit import neutral_mesh
    from presenter.offline.faces import track_faces
    from presenter.render.swap import FaceSwapper

    t0 = time.monotonic()
    consent = check_consent(opts.consent)
    check_output(opts.output, opts.force)
    check_face_index(opts.face_index)
    for flag, path in (("--source", opts.source), ("--target", opts.target)):
        if not path.is_file():
            raise UserError(f"{flag} {path} does not exist")
    if not is_image(opts.source):
        probe_video(opts.source)
    if is_image(opts.target):
        raise UserError(f"--target {opts.target} is an image; give the video whose face is replaced")
    info = probe_video(opts.target)
    swapper = FaceSwapper(opts.weights)
    audio = _soundtrack(opts.target, info.n_frames / float(info.fps))
    crops, source_neutral = _source_faces(opts.source, progress)
    source = swapper.source(crops, source_neutral)

    frames = tqdm(read_frames(opts.target), total=info.n_frames, desc="tracking the target", unit="frame",
                  leave=False, disable=not progress)
    fitted = [f for _, f in track_faces(frames, float(info.fps), face_index=opts.face_index)]
    if not any(f is not None for f in fitted):
        raise UserError(f"--target {opts.target}: no face found in any frame")
    target_neutral = neutral_mesh(np.stack([f.canon for f in fitted if f is not None]))

    job = new_payload()
    mark = Watermark(job)
    provenance = {"synthetic": True, "made_by": f"presenter {__version__}", "job_id": f"{job.run_id:08x}",
                  "task": "face swap", "consent": consent,
                  "consent_time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "inputs": {"source": {"name": opts.source.name, "sha256": sha256_file(opts.source)},
                             "target": {"name": opts.target.name, "sha256": sha256_file(opts.target)}}}
    tags = {"title": f"{SYNTHETIC_TAG} (face swap)",
            "comment": f"{SYNTHETIC_TAG} {__version__}: face swapped with consent; watermark job id "
                       f"{job.run_id:08x} (check with 'presenter verify FILE')",
            "description": json.dumps(provenance)}
    swapped = n = 0
    bar = tqdm(total=len(fitted), desc="swapping", unit="frame", leave=False, disable=not progress)
    with MovieWriter(opts.output, fps=info.fps, width=info.width, height=info.height, audio=audio, tags=tags) as out:
        for rgb, face in zip(read_frames(opts.target), fitted):
            if face is not None:
                rgb = swapper.swap(rgb, face, target_neutral, source)
                swapped += 1
            out.write(mark.mark_rgb(rgb))
            n += 1
            bar.update()
        out.commit()
    bar.close()
    log.info("wrote %s: %d frames, %d with the face swapped, watermark job id %08x, %.1f s",
             opts.output, n, swapped, job.run_id, time.monotonic() - t0)
    return SwapResult(opts.output, n, swapped, job.run_id, time.monotonic() - t0)
