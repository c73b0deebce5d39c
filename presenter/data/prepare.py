"""Ingest real talking videos into the corpus format (`presenter data prepare`).

Per input file: decode video and audio with PyAV, resample audio to 16 kHz mono and video to
25 fps (nearest frame by timestamp, audio sample 0 = first video frame), track the face
(VIDEO mode + One-Euro), fit meshes, and cut the footage into clips of one face that is large
enough, with no scene cut, between `min_clip_s` and `max_clip_s` long. Files that cannot be
used are skipped with the reason in `prepare_report.json`; nothing crashes the batch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from presenter.data.corpus import CROP, FPS, SAMPLE_RATE, Clip, has_clip, write_clip, write_index
from presenter.face.align import align_transform, crop, warp_points
from presenter.face.fit import fit_points, neutral_mesh
from presenter.face.landmarker import FaceLandmarker
from presenter.face.smoothing import OneEuroFilter

log = logging.getLogger(__name__)

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov", ".avi")


@dataclass(frozen=True)
class PrepareConfig:
    min_face_px: float = 96.0      # face width in the source frame
    min_clip_s: float = 2.0
    max_clip_s: float = 10.0
    cut_threshold: float = 30.0    # mean abs difference of 32 px thumbnails (grey levels) that marks a scene cut
    second_face_ratio: float = 0.5  # a second face at least this wide (relative) makes frames ambiguous
    val_fraction: float = 0.1      # share of source files (by name hash) put in the validation split


def _split_for(name: str, val_fraction: float) -> str:
    h = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if h < val_fraction else "train"


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(frames (T, H, W, 3) uint8 at 25 fps, audio (S,) float32 16 kHz aligned to frame 0). Raises ValueError."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise ValueError("no video stream")
            if not c.streams.audio:
                raise ValueError("no audio stream")
            vs, as_ = c.streams.video[0], c.streams.audio[0]
            frames, times, chunks, a_start = [], [], [], None
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for packet in c.demux(vs, as_):
                for f in packet.decode():
                    if packet.stream.type == "video":
                        if f.time is not None:
                            frames.append(np.ascontiguousarray(f.to_ndarray(format="rgb24")))
                            times.append(f.time)
                    else:
                        if a_start is None and f.time is not None:
                            a_start = f.time
                        for r in resampler.resample(f):
                            chunks.append(r.to_ndarray().reshape(-1))
            for r in resampler.resample(None):
                chunks.append(r.to_ndarray().reshape(-1))
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot decode: {e}") from None
    if not frames:
        raise ValueError("no decodable video frames")
    if not chunks:
        raise ValueError("no decodable audio")
    audio = np.concatenate(chunks).astype(np.float32)
    t = np.asarray(times) - times[0]
    order = np.argsort(t, kind="stable")
    t = t[order]
    grid = np.arange(0, t[-1] + 1e-6, 1.0 / FPS)
    picks = order[np.searchsorted(t, grid).clip(0, len(t) - 1)]
    video = np.stack([frames[i] for i in picks])
    # Audio sample 0 must be the first video frame's time.
    shift = int(round(((a_start or 0.0) - times[0]) * SAMPLE_RATE))
    audio = np.concatenate([np.zeros(shift, np.float32), audio]) if shift > 0 else audio[-shift:]
    need = int(round(len(video) * SAMPLE_RATE / FPS))
    audio = np.pad(audio[:need], (0, max(0, need - len(audio))))
    return video, audio


def _segments(ok: np.ndarray, cfg: PrepareConfig) -> list[tuple[int, int]]:
    """Runs of usable frames, split to at most max_clip_s and kept if at least min_clip_s."""
    out, start = [], None
    lo, hi = int(cfg.min_clip_s * FPS), int(cfg.max_clip_s * FPS)
    for i, good in enumerate(np.append(ok, False)):
        if good and start is None:
            start = i
        elif not good and start is not None:
            for s in range(start, i, hi):
                if min(i, s + hi) - s >= lo:
                    out.append((s, min(i, s + hi)))
            start = None
    return out


def prepare_file(path: Path, root: Path, cfg: PrepareConfig) -> dict:
    """Ingest one video; returns its report entry."""
    try:
        frames, audio = decode(path)
    except ValueError as e:
        return {"file": str(path), "status": "skipped", "reason": str(e)}
    n = len(frames)
    thumbs = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in frames]).astype(np.float32)
    cut = np.zeros(n, bool)
    cut[1:] = np.abs(np.diff(thumbs, axis=0)).mean(axis=(1, 2, 3)) > cfg.cut_threshold
    smooth = OneEuroFilter()
    ok = np.zeros(n, bool)
    lms, mats, reasons = [None] * n, [None] * n, {"no face": 0, "several faces": 0, "face too small": 0,
                                                    "scene cut": int(cut.sum())}
    with FaceLandmarker("video", max_faces=2) as lm:
        for i in range(n):
            if cut[i]:
                smooth.reset()
            faces = lm.detect(frames[i], timestamp_ms=i * 1000 // FPS)
            if not faces:
                reasons["no face"] += 1
                smooth.reset()
                continue
            if len(faces) > 1 and faces[1].width_px >= cfg.second_face_ratio * faces[0].width_px:
                reasons["several faces"] += 1
                continue
            if faces[0].width_px < cfg.min_face_px:
                reasons["face too small"] += 1
                continue
            lms[i], mats[i] = smooth(faces[0].landmarks, 1.0 / FPS), faces[0].matrix
            ok[i] = not cut[i]
    # A cut frame starts a new segment: mark it unusable so runs split there.
    segs = _segments(ok, cfg)
    if not segs:
        worst = max(reasons, key=reasons.get)
        return {"file": str(path), "status": "skipped",
                "reason": f"no run of >= {cfg.min_clip_s:.0f} s of one usable face (most frames lost to: {worst})",
                "frames": n, "rejected_frames": reasons}
    split = _split_for(path.stem, cfg.val_fraction)
    written = []
    for k, (a, b) in enumerate(segs):
        clip_id = f"real-{_safe(path.stem)}-{k:03d}"
        written.append(clip_id)
        if has_clip(root, clip_id):
            continue
        crops, out = [], {key: [] for key in ("verts", "canon", "rotation", "scale", "translation")}
        for i in range(a, b):
            m = align_transform(lms[i][:, :2], CROP)
            crops.append(crop(frames[i], m, CROP))
            f = fit_points(warp_points(lms[i], m), mats[i])
            for key, val in (("verts", f.verts_px), ("canon", f.canon), ("rotation", f.rotation),
                             ("scale", f.scale), ("translation", f.translation)):
                out[key].append(val)
        face = {key: np.asarray(v, np.float32) for key, v in out.items()}
        face["neutral"] = neutral_mesh(face["canon"])
        s0, s1 = a * SAMPLE_RATE // FPS, b * SAMPLE_RATE // FPS
        meta = {"split": split, "source": "real", "identity": f"real-{_safe(path.stem)}", "voice": "real",
                "file": path.name, "start_s": a / FPS, "phones": None}
        write_clip(root, Clip(clip_id, meta, audio[s0:s1], face, np.stack(crops)))
    return {"file": str(path), "status": "ok", "clips": written, "frames": n, "rejected_frames": reasons}


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:60]


def prepare(input_dir: Path, root: Path, cfg: PrepareConfig = PrepareConfig()) -> dict:
    """Ingest every video under input_dir into the corpus at root; write prepare_report.json."""
    files = sorted(p for p in Path(input_dir).rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    entries = [prepare_file(p, root, cfg) for p in tqdm(files, desc="prepare", disable=not sys.stderr.isatty())]
    elapsed = time.perf_counter() - t0
    frames = sum(e.get("frames", 0) for e in entries)
    report = {"input": str(input_dir), "files": entries, "seconds_of_video": frames / FPS,
              "processing_s": elapsed, "real_time_factor": elapsed / max(frames / FPS, 1e-9)}
    tmp = root / ".prepare_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, root / "prepare_report.json")
    write_index(root)
    for e in entries:
        if e["status"] != "ok":
            log.warning("skipped %s: %s", e["file"], e["reason"])
    return report
