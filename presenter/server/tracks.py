"""Outgoing WebRTC tracks fed by a session's pump.

A `FeedTrack` is the hand-off between our 25 fps clock and aiortc's sender: the pump offers
each frame without waiting (a full queue drops its oldest frame and counts it), and the
sender's `recv` awaits the next one. Nothing downstream changes a frame, so one frame object
may go to several tracks (the program's viewers).
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

QUEUE_FRAMES = 3          # frames a sender may fall behind before the oldest is dropped


class FeedTrack(MediaStreamTrack):
    """A track whose frames are pushed in by `offer`; `recv` hands them to aiortc's sender."""

    def __init__(self, kind: str, *, on_drop: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self._q: asyncio.Queue[av.frame.Frame | None] = asyncio.Queue(QUEUE_FRAMES)
        self._on_drop = on_drop or (lambda: None)
        self._sending = False             # the sender has asked for a frame (the peer is connected)
        self.sent_times: collections.deque[float] = collections.deque(maxlen=64)  # monotonic send times

    def offer(self, frame: av.frame.Frame) -> None:
        """Queue a frame without waiting; a full queue loses its oldest (counted once sending began)."""
        if self.readyState != "live":
            return
        if self._q.full():
            self._q.get_nowait()
            if self._sending:
                self._on_drop()
        self._q.put_nowait(frame)

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
        return sum(1 for t in self.sent_times if now - t <= window_s) / window_s

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            while not self._q.empty():
                self._q.get_nowait()
            self._q.put_nowait(None)          # wake a waiting recv
