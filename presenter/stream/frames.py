"""Outgoing frames: the synthetic-media label, RGB -> yuv420p, and the labelled idle loop.

Every frame that leaves the presenter carries a small label saying it is synthetic and which
renderer and mouth driver made it, and an invisible watermark (presenter.watermark) with the
version and this run's id. The idle loop's frames are labelled and converted once per
avatar (`IdleFrames`), so silence costs one copy per frame and no rendering.

Legend: H, W frame height and width in pixels (even); yuv420p planes stacked as (H * 3 / 2, W).
"""
from __future__ import annotations

import fractions
import logging
from collections.abc import Sequence

import av
import cv2
import numpy as np

from presenter.motion.mouth import JAW, rest
from presenter.render.base import Renderer
from presenter.watermark import Watermark, new_payload

log = logging.getLogger(__name__)

VIDEO_CLOCK_HZ = 90000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_HZ)
AUDIO_RATE = 48000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.36          # about 8 px tall text on a 512 px frame: small, but readable
MARGIN_PX = 4


def draw_label(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """A copy of rgb (H, W, 3) with `lines` in its bottom-left corner on a dark band."""
    out = np.array(rgb, copy=True)
    h = out.shape[0]
    sizes = [cv2.getTextSize(s, FONT, FONT_SCALE, 1) for s in lines]
    line_h = max(sz[0][1] + sz[1] for sz in sizes) + 3
    box_w = max(sz[0][0] for sz in sizes) + 2 * MARGIN_PX
    top = h - len(lines) * line_h - 2 * MARGIN_PX
    band = out[top:, :box_w]
    band[:] = (band.astype(np.uint16) * 2 // 5).astype(np.uint8)     # darken 60 %: text stays readable
    for i, s in enumerate(lines):
        y = top + MARGIN_PX + (i + 1) * line_h - 4
        cv2.putText(out, s, (MARGIN_PX, y), FONT, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> yuv420p planes (H * 3 / 2, W) uint8: BT.601, limited range, as VP8
    and H.264 expect. OpenCV's converter: 0.06 ms at 512 px against 1.8 ms for libswscale via PyAV;
    the same luma, chroma within about 1 level on average (tests/test_stream.py).

    An odd height or width loses its last row or column: yuv420p needs even sides."""
    h, w = rgb.shape[0] & ~1, rgb.shape[1] & ~1
    return cv2.cvtColor(np.ascontiguousarray(rgb[:h, :w]), cv2.COLOR_RGB2YUV_I420)


def video_frame(yuv: np.ndarray, index: int, fps: int) -> av.VideoFrame:
    """A new yuv420p VideoFrame for frame `index` of a stream at fps: pts on the 90 kHz clock."""
    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
    frame.pts = index * (VIDEO_CLOCK_HZ // fps)
    frame.time_base = VIDEO_TIME_BASE
    return frame


def audio_frame(samples: np.ndarray, index: int) -> av.AudioFrame:
    """(n,) float32 mono 48 kHz for frame `index` -> packed s16 mono AudioFrame, pts in samples."""
    s16 = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = index * len(samples)
    frame.time_base = AUDIO_TIME_BASE
    return frame


def restamp_audio(frame: av.AudioFrame, index: int) -> av.AudioFrame:
    """A copy of an s16 mono 48 kHz frame, numbered as frame `index` of another stream."""
    out = av.AudioFrame.from_ndarray(frame.to_ndarray(), format="s16", layout="mono")
    out.sample_rate = AUDIO_RATE
    out.pts = index * frame.samples
    out.time_base = AUDIO_TIME_BASE
    return out


def rgb_from_yuv(yuv: np.ndarray) -> np.ndarray:
    """yuv420p planes (H * 3 / 2, W) -> RGB (H, W, 3) uint8 (for checks and previews)."""
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p").to_ndarray(format="rgb24")


class IdleFrames:
    """The renderer's idle loop, labelled and converted to yuv420p once. Read-only, shareable."""

    def __init__(self, renderer: Renderer, n_frames: int, label_lines: Sequence[str], *,
                 watermark: Watermark | None = None) -> None:
        """Also renders one frame with an open mouth, so the renderer's one-time setup (JIT caches,
        about 0.6 s for the baseline) is paid here rather than by a session's first spoken frame.
        Every frame carries `watermark`; None: a new run id (logged, for `presenter verify`)."""
        self.label_lines = tuple(label_lines)
        self.watermark = Watermark(new_payload()) if watermark is None else watermark
        log.info("frames watermarked: presenter %s, run id %08x", self.watermark.payload.version,
                 self.watermark.payload.run_id)
        warm = rest()
        warm[JAW] = 0.5
        renderer.render(0, warm)
        self._yuv = [self.compose(renderer.render(i, None)) for i in range(n_frames)]
        for y in self._yuv:
            y.setflags(write=False)

    def __len__(self) -> int:
        return len(self._yuv)

    def yuv(self, index: int) -> np.ndarray:
        return self._yuv[index % len(self._yuv)]

    def compose(self, rgb: np.ndarray) -> np.ndarray:
        """A rendered RGB frame -> labelled, watermarked yuv420p, like the idle frames (the mark: ~0.05 ms)."""
        return self.watermark.mark_yuv420(to_yuv420(draw_label(rgb, self.label_lines)))
