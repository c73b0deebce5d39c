"""Outgoing WebRTC tracks fed by a session's pump.

A `FeedTrack` is the hand-off between our 25 fps clock and aiortc's sender: the pump offers
each frame without waiting (a full queue drops its oldest frame and counts it), and the
sender's `recv` awaits the next one. Nothing downstream changes a frame, so one frame object
may go to several tracks (the program's viewers).

Audio leaves in 20 ms frames. aiortc's Opus encoder turns a longer frame into several 20 ms
packets, and its RTP sender stamps them all with the frame's one timestamp (the rule for video
fragments); receivers then keep one of each pair (Chromium counts the rest as packetsDiscarded
and conceals them: half the voice was lost with 40 ms frames). So an audio track splits each
offered frame into 20 ms pieces, each with its own pts.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

QUEUE_FRAMES = 3          # video frames a sender may fall behind before the oldest is dropped
AUDIO_PACKET_S = 0.02     # one Opus packet per audio frame handed to aiortc (see the module docstring)
AUDIO_QUEUE_S = 1.0       # audio a sender may fall behind (a starved event loop) before any is dropped


class FeedTrack(MediaStreamTrack):
    """A track whose frames are pushed in by `offer`; `recv` hands them to aiortc's sender."""

    def __init__(self, kind: str, *, on_drop: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._pieces = 1                  # audio: 20 ms pieces per offered frame, set by the first offer
        self._q: asyncio.Queue[av.frame.Frame | None] = asyncio.Queue()
        self._on_drop = on_drop or (lambda: None)
        self._sending = False             # the sender has asked for a frame (the peer is connected)
        self.sent_times: collections.deque[float] = collections.deque(maxlen=64)  # monotonic send times

    def offer(self, frame: av.frame.Frame) -> None:
        """Queue a frame without waiting; a full queue loses its oldest (counted once sending began)."""
        if self.readyState != "live":
            return
        pieces = split_audio(frame) if self.kind == "audio" else [frame]
        self._pieces = len(pieces)
        limit = round(AUDIO_QUEUE_S / AUDIO_PACKET_S) if self.kind == "audio" else QUEUE_FRAMES
        if self._q.qsize() + len(pieces) > limit:
            for _ in range(min(self._pieces, self._q.qsize())):
                self._q.get_nowait()
            if self._sending:
                self._on_drop()
        for piece in pieces:
            self._q.put_nowait(piece)

    async def recv(self) -> av.frame.Frame:
        if self.readyState != "live":
            raise MediaStreamError
        self._sending = True
        frame = await self._q.get()
        if frame is None:
            raise MediaStreamError
        self.sent_times.append(time.monotonic())
        return frame

    def fps(self, window_s: float = 1.0) -> float:
        """Frames handed to the sender over the last window_s seconds, per second."""
        now = time.monotonic()
        return sum(1 for t in self.sent_times if now - t <= window_s) / window_s / self._pieces

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            while not self._q.empty():
                self._q.get_nowait()
            self._q.put_nowait(None)          # wake a waiting recv


def split_audio(frame: av.AudioFrame) -> list[av.AudioFrame]:
    """An s16 packed audio frame -> consecutive frames of AUDIO_PACKET_S each (pts advancing by
    their length); a frame that is not a whole number of packets is returned as it is."""
    n = round(frame.sample_rate * AUDIO_PACKET_S)
    if frame.samples <= n or frame.samples % n:
        return [frame]
    data = frame.to_ndarray()                     # (1, samples * channels), packed
    channels = len(frame.layout.channels)
    out = []
    for i in range(frame.samples // n):
        piece = av.AudioFrame.from_ndarray(data[:, i * n * channels:(i + 1) * n * channels],
                                           format=frame.format.name, layout=frame.layout.name)
        piece.sample_rate = frame.sample_rate
        piece.time_base = frame.time_base
        piece.pts = None if frame.pts is None else frame.pts + i * n
        out.append(piece)
    return out
