"""Cross-session batching: the generator's network runs once per 40 ms tick for every live session on a worker.

A GPU (and, less so, a CPU) spends about as long on a batch of frames as on one, so a worker
that holds many sessions draws them together. Per frame, the generator renderer does
(`presenter.render.generator`):

    prepare (warp, paint mask, masked target, guidance)   per session, in the session's own thread
    -> network(target, mask, guidance, styles)            ONE call per tick for all sessions: here
    -> finish (colour match, paste-back)                   per session, in the session's own thread

Only the middle step is shared. Each session has a lane (`BatchSession`): `submit(index, mouth)`
prepares the frame in the caller's thread and queues it; the batcher's thread wakes every
`tick_s`, waits at most `gather_s` for frames still being prepared, then sends what is ready
(at most `per_session` frames per session, at most `max_batch` in all, oldest lanes first)
through the network and hands each window back to its lane. So:
- per-session state stays in the session (its renderer's warp inputs, its frame indices);
- a session with nothing ready is skipped; one stalled in its own work misses this tick only,
  never holds it past the deadline; one that floods its lane gets `per_session` frames a tick;
- a lane's results come back in the order it submitted them (FIFO lanes, ticks in sequence).

`BatchSession` is itself a `Renderer` (render(index, mouth) blocks for its window and finishes
it), so a live stream can hold one in place of the shared renderer (docs/deploy.md).

Sessions may use different avatar packs if their renderers share the batcher's weights: each
frame carries its own avatar's styles.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from presenter.render.generator import GeneratorRenderer, PreparedWindow

log = logging.getLogger(__name__)

TICK_S = 0.04          # one 25 fps frame
GATHER_S = 0.010       # how long a tick waits for frames still being prepared
MAX_PENDING = 8        # frames a lane may hold; beyond it the oldest is dropped (its caller gets FrameDropped)


class FrameDropped(RuntimeError):
    """A queued frame was dropped: its lane held more than MAX_PENDING, or the lane or batcher closed."""


@dataclass
class _Job:
    lane: "BatchSession"
    seq: int                      # the lane's running frame number
    prep: PreparedWindow
    styles: np.ndarray            # (1, N) the lane's avatar styles
    future: Future                # -> the network's window (S, S, 3) float32
    queued: float                 # time.monotonic() when it became ready


@dataclass(frozen=True)
class TickReport:
    frames: int                   # windows that went through the network in this tick
    sessions: int                 # lanes served
    skipped: int                  # open lanes with nothing ready (idle, or still preparing at the deadline)
    late: int                     # of those, lanes still preparing when the deadline passed
    net_s: float                  # seconds in the network call (0 when nothing was ready)


@dataclass
class BatcherStats:
    ticks: int = 0
    frames: int = 0
    late: int = 0                 # lane-ticks missed because a lane was still preparing at the deadline
    dropped: int = 0              # frames dropped from over-full or closed lanes
    max_batch: int = 0
    net_s: float = 0.0            # total seconds in the network


class BatchSession:
    """One session's lane. Thread-safe; one per live session; close it when the session ends."""

    def __init__(self, batcher: "CrossSessionBatcher", renderer: GeneratorRenderer, name: str) -> None:
        self._batcher, self.renderer, self.lane_name = batcher, renderer, name
        self.name, self.synthetic_label = renderer.name, renderer.synthetic_label
        self._queue: deque[_Job] = deque()    # ready frames, oldest first; guarded by the batcher's lock
        self._preparing = 0                   # frames being prepared now
        self._seq = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"BatchSession({self.lane_name})"

    def submit(self, index: int, mouth: np.ndarray) -> tuple[PreparedWindow, Future]:
        """Prepare frame `index` with `mouth` here, queue it for the next tick -> (its prepared inputs, a
        future of its network window (S, S, 3) float32). Windows of one lane complete in submit order."""
        b = self._batcher
        with b._cv:
            if self.closed:
                raise FrameDropped(f"{self!r} is closed")
            self._preparing += 1
        try:
            prep = self.renderer.prepare(index, mouth)
        finally:
            with b._cv:
                self._preparing -= 1
                b._cv.notify_all()
        future: Future = Future()
        with b._cv:
            if self.closed:
                raise FrameDropped(f"{self!r} closed while frame {index} was being prepared")
            self._queue.append(_Job(self, self._seq, prep, self.renderer.styles, future, time.monotonic()))
            self._seq += 1
            while len(self._queue) > MAX_PENDING:
                old = self._queue.popleft()
                _fail(old, FrameDropped(f"{self!r}: frame {old.seq} dropped, lane over {MAX_PENDING}"))
                b.stats.dropped += 1
            b._cv.notify_all()
        return prep, future

    def finish(self, prep: PreparedWindow, future: Future, timeout_s: float | None = None) -> np.ndarray:
        """Wait for a submitted frame's window and finish it here -> frame (H, W, 3) uint8."""
        return self.renderer.finish(prep, future.result(timeout_s))

    def render(self, index: int, mouth: np.ndarray | None) -> np.ndarray:
        """The Renderer seam: the idle frame for None, else this frame through the next tick's batch."""
        if mouth is None:
            return self.renderer.render(index, None)
        return self.finish(*self.submit(index, mouth))

    def close(self) -> None:
        """Leave the batcher; frames still queued end with FrameDropped."""
        self._batcher._remove(self)


class CrossSessionBatcher:
    """Runs the generator network once per tick for all lanes. `start()` ticks in a thread every
    `tick_s`; `tick()` runs one tick now (tests, benchmarks). Close with `close()`."""

    def __init__(self, renderer: GeneratorRenderer, *,
                 tick_s: float = TICK_S,       # seconds between ticks
                 gather_s: float = GATHER_S,   # per-tick deadline for frames still being prepared, seconds
                 max_batch: int = 64,          # most windows in one network call
                 per_session: int = 1) -> None:  # most windows of one lane in one tick
        if max_batch < 1 or per_session < 1 or tick_s <= 0 or gather_s < 0:
            raise ValueError(f"need max_batch, per_session >= 1, tick_s > 0, gather_s >= 0; got {max_batch}, "
                             f"{per_session}, {tick_s}, {gather_s}")
        self.renderer = renderer
        self.tick_s, self.gather_s, self.max_batch, self.per_session = tick_s, gather_s, max_batch, per_session
        self.stats = BatcherStats()
        self._cv = threading.Condition()
        self._lanes: list[BatchSession] = []
        self._n_lanes = 0
        self._thread: threading.Thread | None = None
        self._t0 = 0.0                 # time.monotonic() of the first tick (start())
        self._stopping = False

    def session(self, renderer: GeneratorRenderer | None = None) -> BatchSession:
        """A new lane. renderer: the session's own (another avatar pack) built on the batcher's weights;
        None = the batcher's renderer."""
        renderer = renderer or self.renderer
        if renderer.model.cfg != self.renderer.model.cfg:
            raise ValueError("a lane's renderer must use the batcher's generator weights (its config differs)")
        with self._cv:
            if self._stopping:
                raise RuntimeError("the batcher is closed: no new lanes")
            lane = BatchSession(self, renderer, f"lane {self._n_lanes}")
            self._n_lanes += 1
            self._lanes.append(lane)
        return lane

    def _remove(self, lane: BatchSession) -> None:
        with self._cv:
            lane.closed = True
            if lane in self._lanes:
                self._lanes.remove(lane)
            while lane._queue:
                _fail(lane._queue.popleft(), FrameDropped(f"{lane!r} closed"))
                self.stats.dropped += 1

    @property
    def lanes(self) -> int:
        with self._cv:
            return len(self._lanes)

    # --- one tick ----------------------------------------------------------------------------

    def _take(self) -> tuple[list[_Job], int, int]:
        """Under the lock: the jobs of this tick, oldest lanes first -> (jobs, lanes skipped, lanes late)."""
        ready = sorted((lane for lane in self._lanes if lane._queue), key=lambda lane: lane._queue[0].queued)
        skipped = len(self._lanes) - len(ready)
        late = sum(1 for lane in self._lanes if not lane._queue and lane._preparing)
        jobs: list[_Job] = []
        for _ in range(self.per_session):
            for lane in ready:
                if lane._queue and len(jobs) < self.max_batch:
                    job = lane._queue.popleft()
                    if job.future.set_running_or_notify_cancel():    # False: its caller cancelled it
                        jobs.append(job)
        return jobs, skipped, late

    def tick(self, gather_s: float | None = None) -> TickReport:
        """Wait up to gather_s (default: the batcher's) for frames being prepared, then run the ready ones."""
        deadline = time.monotonic() + (self.gather_s if gather_s is None else gather_s)
        with self._cv:
            while any(lane._preparing for lane in self._lanes) and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            jobs, skipped, late = self._take()
            self.stats.ticks += 1
            self.stats.late += late
        if not jobs:
            return TickReport(0, 0, skipped, late, 0.0)
        t0 = time.perf_counter()
        try:
            windows = self.renderer.generate_batch(np.stack([j.prep.target for j in jobs]),
                                                   np.stack([j.prep.mask for j in jobs]),
                                                   np.stack([j.prep.guidance for j in jobs]),
                                                   np.concatenate([j.styles for j in jobs]))
        except Exception as e:          # a network failure fails this tick's frames, not the batcher
            log.error("generator batch of %d failed: %r", len(jobs), e)
            for j in jobs:
                _fail(j, e)
            return TickReport(0, 0, skipped, late, time.perf_counter() - t0)
        net_s = time.perf_counter() - t0
        for j, w in zip(jobs, windows):
            j.future.set_result(w)
        with self._cv:
            self.stats.frames += len(jobs)
            self.stats.net_s += net_s
            self.stats.max_batch = max(self.stats.max_batch, len(jobs))
        return TickReport(len(jobs), len({id(j.lane) for j in jobs}), skipped, late, net_s)

    # --- the ticking thread ------------------------------------------------------------------

    def start(self) -> "CrossSessionBatcher":
        """Tick at t0 + k * tick_s (t0 = now) in a daemon thread until close()."""
        if self._thread is None:
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="presenter-batcher", daemon=True)
            self._thread.start()
        return self

    def next_tick(self, after: float | None = None) -> float:
        """The time.monotonic() of the first tick at or after `after` (default: now). A session's frame
        clock should sit on this grid: a frame prepared just before a tick waits least for its batch."""
        if self._thread is None:
            raise RuntimeError("the batcher is not ticking: call start() first")
        after = time.monotonic() if after is None else after
        k = math.ceil((after - self._t0) / self.tick_s - 1e-6)     # 1e-6 of a tick: a tick's own time is on it
        return self._t0 + k * self.tick_s

    def _run(self) -> None:
        due = self._t0
        while True:
            with self._cv:
                while not self._stopping and (left := due - time.monotonic()) > 0:
                    self._cv.wait(left)
                if self._stopping:
                    return
            self.tick()
            # an overrun skips the ticks it missed (no burst) and keeps the grid the sessions are on
            due = self.next_tick(max(due + self.tick_s, time.monotonic()))

    def close(self) -> None:
        """Stop ticking and drop every queued frame (their callers get FrameDropped)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            lanes = list(self._lanes)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for lane in lanes:
            self._remove(lane)


def _fail(job: _Job, error: BaseException) -> None:
    """End a job's future with error, unless its caller has cancelled it already."""
    if not job.future.cancelled():
        job.future.set_exception(error)
