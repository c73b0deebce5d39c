"""The training corpus on disk: one format for synthetic clips and ingested real videos.

    CORPUS/
      index.json                 format, version, fps, sample rate, crop size, and one entry per clip
                                 (id, split, source, identity, voice, n_frames, seconds); rebuilt from
                                 the clip folders, so it never disagrees with them
      clips/<id>/meta.json       the clip's entry plus phone timing where known:
                                 phones [[phone, start_s, end_s], ...] (synthetic: exact; real: none)
      clips/<id>/audio.npy       (S,) float32, 16 kHz mono, sample 0 at video frame 0's start
      clips/<id>/face.npz        verts (T, V, 3) mesh in crop pixels (x right, y down, z larger = nearer);
                                 canon (T, V, 3) cm pose-free; rotation (T, 3, 3); scale (T,); translation (T, 3)
                                 (pose of canon in the crop's image-up frame, see presenter.face.fit);
                                 neutral (V, 3) cm; params (T, P) commanded mouth pose (synthetic only)
      clips/<id>/crops.mp4       aligned 256 px face crops, H.264 crf 16, 25 fps; 128 px crops are this
                                 downscaled (the crop template scales exactly, presenter.face.align)

Masks are not stored: `presenter.face.masks` recomputes them from `verts` exactly.
Each clip folder is written under a temporary name and renamed into place, so a killed run
leaves only whole clips; a rerun skips them. Legend: T frames at 25 fps, V = 468, P mouth params.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from presenter.errors import UserError

FORMAT = "presenter-corpus"
VERSION = 1
FPS = 25
SAMPLE_RATE = 16000
CROP = 256
SPLITS = ("train", "val", "test")


@dataclass
class Clip:
    """One clip in memory."""
    id: str
    meta: dict[str, Any]        # split, source, identity, voice, phones, ...
    audio: np.ndarray           # (S,) float32 16 kHz
    face: dict[str, np.ndarray]
    crops: np.ndarray | None    # (T, 256, 256, 3) uint8, or None when not loaded

    @property
    def n_frames(self) -> int:
        return len(self.face["verts"])


def _write_video(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.options = {"crf": "16", "preset": "veryfast"}
        s.thread_count = 1
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def read_video(path: Path) -> np.ndarray:
    """All frames of a crops video (T, H, W, 3) uint8."""
    with av.open(str(path)) as c:
        return np.stack([np.ascontiguousarray(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)])


def clip_dir(root: Path, clip_id: str) -> Path:
    return Path(root) / "clips" / clip_id


def has_clip(root: Path, clip_id: str) -> bool:
    return (clip_dir(root, clip_id) / "meta.json").is_file()


def write_clip(root: Path, clip: Clip) -> Path:
    """Write one clip atomically (temp folder, then rename); an existing clip is kept as it is."""
    final = clip_dir(root, clip.id)
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    n = clip.n_frames
    assert clip.crops is not None and clip.crops.shape == (n, CROP, CROP, 3), "crops must be (T, 256, 256, 3)"
    assert abs(len(clip.audio) / SAMPLE_RATE - n / FPS) < 1.0 / FPS + 1e-6, "audio and video lengths differ"
    tmp = Path(tempfile.mkdtemp(prefix=f".{clip.id}.", dir=final.parent))
    try:
        np.save(tmp / "audio.npy", clip.audio.astype(np.float32))
        np.savez(tmp / "face.npz", **clip.face)
        _write_video(tmp / "crops.mp4", clip.crops)
        meta = {"id": clip.id, "n_frames": n, "seconds": n / FPS, **clip.meta}
        (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_clip(root: Path, clip_id: str, *, crops: bool = True) -> Clip:
    d = clip_dir(root, clip_id)
    meta = json.loads((d / "meta.json").read_text())
    with np.load(d / "face.npz") as z:
        face = {k: z[k] for k in z.files}
    return Clip(clip_id, meta, np.load(d / "audio.npy"), face, read_video(d / "crops.mp4") if crops else None)


def crops_at(crops: np.ndarray, size: int) -> np.ndarray:
    """Crops (T, 256, 256, 3) at another training resolution."""
    if size == CROP:
        return crops
    return np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])


def write_index(root: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rebuild index.json from the clip folders (atomic replace) and return it."""
    root = Path(root)
    clips = []
    for meta_path in sorted((root / "clips").glob("*/meta.json")):
        m = json.loads(meta_path.read_text())
        clips.append({k: m[k] for k in ("id", "split", "source", "identity", "voice", "n_frames", "seconds")
                      if k in m})
    index = {"format": FORMAT, "version": VERSION, "fps": FPS, "sample_rate": SAMPLE_RATE, "crop": CROP,
             **(extra or {}), "clips": clips}
    tmp = root / ".index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, root / "index.json")
    return index


def read_index(root: Path) -> dict[str, Any]:
    p = Path(root) / "index.json"
    if not p.is_file():
        raise UserError(f"{root} is not a corpus (no index.json); make one with 'presenter data synth -o {root}'")
    index = json.loads(p.read_text())
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise UserError(f"{p}: format {index.get('format')!r} version {index.get('version')!r}; "
                        f"expected {FORMAT!r} version {VERSION}")
    return index


def write_talking_video(path: Path, frames: np.ndarray, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """An mp4 (H.264 + AAC) of frames (T, H, W, 3) at 25 fps with mono float32 audio, written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    with av.open(str(tmp), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.options = {"crf": "18"}
        as_ = c.add_stream("aac", rate=sample_rate, layout="mono")
        pcm = np.clip(audio, -1, 1).astype(np.float32)
        hop = 1024
        for i in range(0, len(pcm), hop):
            af = av.AudioFrame.from_ndarray(pcm[None, i:i + hop], format="flt", layout="mono")
            af.sample_rate, af.pts = sample_rate, i
            for pkt in as_.encode(af):
                c.mux(pkt)
        for pkt in as_.encode():
            c.mux(pkt)
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(pkt)
        for pkt in vs.encode():
            c.mux(pkt)
    os.replace(tmp, path)
