"""What the voice-agent adapters (Pipecat, LiveKit Agents) share: one presenter session and the
ledger of speech pushed against speech played.

    session = PresenterSession(pipeline=None, workers=2)    # the adapters' defaults
    stream = await session.open()                           # loads the pipeline if none was given
    ...
    await session.close()

    ledger = Playout()                                      # items wait behind the speech before them
    ledger.push(seconds); ledger.hold(item); ledger.play(FRAME_S); ledger.release(idle=...)

Each adapter owns one `PresenterSession` (its stream and its worker pool) and one `Playout`; the
frameworks differ only in what they hold behind speech (Pipecat: its frames; LiveKit: the
segment-end marker) and how frames leave.
"""
from __future__ import annotations

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from presenter.errors import UserError
from presenter.stream.pipeline import Pipeline, load_pipeline
from presenter.stream.stream import PresenterStream, StreamConfig

PLAYED_SLACK_S = 0.001                # speech counted as played (rounding: 22,050 Hz in, 48 kHz out)

T = TypeVar("T")


class PresenterSession:
    """One agent session's PresenterStream and the worker pool it runs in."""

    def __init__(self, *, pipeline: Pipeline | None = None, avatar: str = "default", engine: str = "auto",
                 renderer: str = "auto", workers: int = 2, stream_config: StreamConfig | None = None,
                 thread_name: str = "presenter-agent") -> None:
        """pipeline: a loaded presenter pipeline, shared between sessions; None loads
        `load_pipeline(avatar, engine, renderer)` at `open` (~1-6 s).
        workers: threads of this session's pool (motion, render, colour conversion); one per core.
        stream_config: None holds audio for the pipeline's `audio_delay_s` (its driver's look-ahead
        and compute time + 80 ms)."""
        if workers < 1:
            raise UserError(f"workers={workers}: need at least 1 worker thread")
        self.pipeline = pipeline
        self._load_args = (avatar, engine, renderer)
        self._workers = workers
        self._stream_config = stream_config
        self._thread_name = thread_name
        self._pool: ThreadPoolExecutor | None = None
        self.stream: PresenterStream | None = None
        self._opening = asyncio.Lock()

    @property
    def pool(self) -> ThreadPoolExecutor | None:
        return self._pool

    async def open(self) -> PresenterStream:
        """The session's stream, started on first call: the pipeline (loaded off the loop if none
        was given), then the pool and the stream. Idempotent."""
        async with self._opening:
            if self.stream is None:
                if self.pipeline is None:
                    self.pipeline = await asyncio.to_thread(load_pipeline, *self._load_args)
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=self._thread_name)
                self.stream = self.pipeline.stream(self._pool, config=self._stream_config)
            return self.stream

    async def close(self) -> None:
        """Stop the stream and the pool. Idempotent; `open` starts a new stream afterwards."""
        stream, self.stream = self.stream, None
        if stream is not None:
            await stream.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class Playout(Generic[T]):
    """Speech pushed against speech played (seconds since the stream was last idle or interrupted),
    and items held until the speech pushed before them has played, in order."""

    def __init__(self) -> None:
        self.pushed_s = 0.0
        self.played_s = 0.0
        self.pushes = 0                                   # push() calls so far: a push since a chunk left
        self._held: collections.deque[tuple[float, T]] = collections.deque()   # (pushed_s when held, item)
        self.drained = asyncio.Event()                    # set while nothing pushed waits to be played
        self.drained.set()

    @property
    def unplayed_s(self) -> float:
        return self.pushed_s - self.played_s

    def push(self, seconds: float) -> None:
        """Speech of this length entered the stream."""
        self.pushed_s += seconds
        self.pushes += 1
        self.drained.clear()

    def hold(self, item: T) -> bool:
        """Hold item behind the speech pushed so far; False (not held) when all of it has played."""
        if self._held or self.pushed_s > self.played_s + PLAYED_SLACK_S:
            self._held.append((self.pushed_s, item))
            self.drained.clear()
            return True
        return False

    def play(self, seconds: float) -> None:
        """Speech of this length left the stream."""
        self.played_s += seconds

    def release(self, *, idle: bool) -> list[T]:
        """The held items whose speech has played (all of them once the stream is idle), in order."""
        out = []
        while self._held and (idle or self._held[0][0] <= self.played_s + PLAYED_SLACK_S):
            out.append(self._held.popleft()[1])
        if idle and not self._held:
            self.pushed_s = self.played_s = 0.0
            self.drained.set()
        return out

    def clear(self) -> list[T]:
        """Barge-in: forget the speech not yet played; -> the items that were held behind it."""
        held, self._held = self._held, collections.deque()
        self.pushed_s = self.played_s = 0.0
        self.drained.set()
        return [item for _, item in held]
