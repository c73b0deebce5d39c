"""Files in and out for the offline tools: any audio or video PyAV reads, H.264 + AAC MP4 written
atomically with the synthetic-media tags.

Legend: n samples per channel, C channels (1 or 2), H, W frame height and width in pixels.
"""
from __future__ import annotations

import fractions
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from presenter.audio.io import ANALYSIS_RATE, frame_to_pcm, resample
from presenter.errors import UserError

log = logging.getLogger(__name__)

SYNTHETIC_TAG = "SYNTHETIC: made by presenter"    # the container's title and comment start with it
AAC_FRAME = 1024                                    # samples per AAC frame
CRF = 18                                            # x264 quality: visually lossless for the face


@dataclass(frozen=True)
class Audio:
    """A decoded audio track: samples (n, C) float32 in [-1, 1] at `rate` Hz, C 1 or 2."""
    samples: np.ndarray
    rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    def analysis(self) -> np.ndarray:
        """(m,) float32 mono at 16 kHz: what the mouth drivers read."""
        return resample(self.samples, self.rate, ANALYSIS_RATE)


def read_audio(path: Path) -> Audio:
    """The first audio track of any file PyAV decodes (WAV, MP3, M4A, a video's soundtrack...).

    UserError for a missing or undecodable file, a file without audio, or one with no samples."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio {path} does not exist")
    chunks, rate, channels = [], 0, 1
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UserError(f"{path} has no audio track; give a file with speech in it")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                pcm, rate = frame_to_pcm(frame)
                channels = min(2, pcm.shape[1])
                chunks.append(_float(pcm))
    except av.error.FFmpegError as e:
        raise UserError(f"cannot decode {path} as audio ({e}); is it a complete audio or video file?") from None
    if not chunks or sum(len(c) for c in chunks) == 0:
        raise UserError(f"{path}: the audio track is empty (0 s); give a file with speech in it")
    pcm = np.concatenate(chunks)
    samples = pcm[:, :2] if channels == 2 else pcm.mean(axis=1, keepdims=True)
    return Audio(np.ascontiguousarray(samples, np.float32), rate)


def _float(pcm: np.ndarray) -> np.ndarray:
    """PCM (n, C) of any sample type -> float32 in [-1, 1]."""
    if pcm.dtype.kind == "f":
        return pcm.astype(np.float32, copy=False)
    scale = float(np.iinfo(pcm.dtype).max) + 1.0
    if pcm.dtype.kind == "u":                           # u8: offset binary
        return (pcm.astype(np.float32) - scale / 2) / (scale / 2)
    return pcm.astype(np.float32) / scale


@dataclass(frozen=True)
class VideoInfo:
    fps: fractions.Fraction   # frames per second of the first video stream
    width: int
    height: int
    n_frames: int             # counted by decoding


def probe_video(path: Path) -> VideoInfo:
    """Frame rate, size (as displayed: rotation applied) and frame count of a video file (decodes it once).
    UserError when unreadable."""
    n, size = 0, (0, 0)
    with _open_video(path) as (container, stream):
        try:
            for frame in container.decode(stream):
                n, size = n + 1, (frame.width, frame.height)[::-1 if _quarter_turns(frame) % 2 else 1]
        except av.error.FFmpegError as e:
            raise UserError(f"cannot decode {path}: {e}; is it a complete video file?") from None
        rate = stream.average_rate or stream.guessed_rate
    if n == 0:
        raise UserError(f"{path}: no decodable video frames")
    if not rate:
        raise UserError(f"{path}: the video does not state a frame rate")
    return VideoInfo(fractions.Fraction(rate), size[0], size[1], n)


@contextmanager
def _open_video(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """(container, its first video stream), closed on exit; UserError naming the file when it is none."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise UserError(f"cannot read {path} as an image or a video ({e})") from None
    with container:
        if not container.streams.video:
            raise UserError(f"{path} has no video stream (audio-only?); give a video or an image of a face")
        yield container, container.streams.video[0]


def read_frames(path: Path, limit: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames (H, W, 3) uint8, contiguous and upright (display rotation applied), of a video's first
    stream; at most `limit` of them."""
    with _open_video(path) as (container, stream):
        stream.thread_type = "AUTO"
        try:
            for i, frame in enumerate(container.decode(stream)):
                if limit is not None and i >= limit:
                    return
                # PyAV pads rows at many widths: MediaPipe then silently finds no face (DESIGN.md 6).
                yield np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), _quarter_turns(frame)))
        except av.error.FFmpegError as e:
            raise UserError(f"cannot decode {path}: {e}; is it a complete video file?") from None


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show a decoded frame upright: phones store portrait video
    sideways with a display rotation (90 -> one turn)."""
    return round((frame.rotation or 0) / 90) % 4


def metadata(path: Path) -> dict[str, str]:
    """A media file's container tags (title, comment, ...)."""
    with av.open(str(path)) as container:
        return dict(container.metadata)


class MovieWriter:
    """An H.264 + AAC MP4 written to a hidden temporary sibling, renamed into place on `commit`.

    Audio is interleaved with the video as frames arrive (each frame brings its share of the
    track); `tags` go into the container's metadata (title, comment, ...). Leaving the `with`
    block without `commit` (an error, Ctrl-C) removes the temporary file: nothing half-written.
    Odd frame sides lose their last row or column (yuv420p needs even sides)."""

    def __init__(self, out: Path, *, fps: fractions.Fraction, width: int, height: int, audio: Audio,
                 tags: dict[str, str]) -> None:
        self.out = Path(out)
        self.tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp.mp4")
        self.fps, self.audio = fractions.Fraction(fps), audio
        self.width, self.height = width & ~1, height & ~1
        if (self.width, self.height) != (width, height):
            log.warning("frame size %dx%d is odd: written as %dx%d (H.264 yuv420p needs even sides)",
                        width, height, self.width, self.height)
        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        self.container.metadata.update(tags)
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width, self.video.height, self.video.pix_fmt = self.width, self.height, "yuv420p"
        self.video.options = {"crf": str(CRF), "preset": "veryfast"}
        layout = "stereo" if audio.samples.shape[1] == 2 else "mono"
        self.sound = self.container.add_stream("aac", rate=audio.rate, layout=layout)
        self.sound.bit_rate = 128_000
        self.frames = 0
        self._sent = 0                                  # audio samples encoded so far
        self._closed = False

    def write(self, rgb: np.ndarray) -> None:
        """Append one RGB frame (H, W, 3) uint8 and the audio up to its end."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:self.height, :self.width]), format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self.fps
        self.container.mux(self.video.encode(frame))
        self.frames += 1
        self._audio_until(min(len(self.audio.samples), round(self.frames / self.fps * self.audio.rate)))

    def _audio_until(self, end: int) -> None:
        """Encode the audio from where it stopped to sample `end` in whole AAC frames (the rest at the end)."""
        samples = self.audio.samples
        while self._sent + AAC_FRAME <= end or (end == len(samples) and self._sent < end):
            chunk = samples[self._sent:self._sent + AAC_FRAME]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.T), format="fltp",
                                               layout="stereo" if chunk.shape[1] == 2 else "mono")
            frame.sample_rate, frame.pts = self.audio.rate, self._sent
            frame.time_base = fractions.Fraction(1, self.audio.rate)
            self.container.mux(self.sound.encode(frame))
            self._sent += len(chunk)

    def commit(self) -> Path:
        """Finish the streams (the rest of the audio), close the file and rename it to `out`."""
        self._audio_until(len(self.audio.samples))
        self.container.mux(self.video.encode(None))
        self.container.mux(self.sound.encode(None))
        self.container.close()
        self._closed = True
        os.replace(self.tmp, self.out)
        return self.out

    def __enter__(self) -> MovieWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._closed:
            try:
                self.container.close()
            except av.error.FFmpegError:
                pass
            self.tmp.unlink(missing_ok=True)
