"""PresenterStream: speech audio in, a paced presenter video with the matching (delayed) audio out.

One stream per session, shared by the WebRTC server, the local-microphone mode and agents:

    stream = PresenterStream(renderer, LoudnessDriver(), idle=idle, pool=pool)
    stream.push_audio(pcm, 48000)          # any chunk size, any rate, faster or slower than real time
    stream.flush()                         # end of an utterance: play out what was pushed
    stream.interrupt()                     # barge-in: drop pending speech, idle within one frame
    async for chunk in stream:             # one StreamChunk per 40 ms, on the stream's own clock
        send(chunk.video, chunk.audio)

Data flow (model work in `pool`, never on the event loop):

    push_audio -> inbox -> resample to 48 kHz mono (on the loop) -> playback ring (audio out)
                                  -> 16 kHz -> speech queue -> [pool] MouthDriver -> poses,
                                     one per 40 ms of the ring, in slices of INGEST_SLICE_S
    clock tick n (every 40 ms): take ring audio [r, r + 40 ms) and the pose of that span
                                -> [pool] Renderer.render(n, pose) -> label -> yuv420p

Audio and motion are separate stages, so a slow driver never holds the voice back: audio
reaches the ring as soon as it is resampled. Playback starts once `buffer_s` is held and the
first frame's pose is ready. A driver that falls behind the playback (an overloaded machine) is
told to skip the frames already played (`MouthDriver.skip`): the mouth rests there, and the
frames after them are on time again, in sync. A live stream also grows its delay when poses come
late (up to `max_extra_s`, by holding back silent frames, never speech) and gives it back
slowly once they are on time again, so lips and voice meet on a busy machine too.

The clock never waits on compute: a render starts `render_lead_s` before its frame is due and,
if it is not done by then, the previous frame is sent again and counted as reused; while that
late render still runs no new one starts (the frames it would have drawn are reused too), so an
overloaded pool sheds work instead of queueing it. Audio is
never stretched or dropped; playback starts once `buffer_s` of audio is held (or at `flush`),
which covers the driver's look-ahead, one frame, the render lead and arrival jitter. That delay
is the pipeline latency that the returned audio carries, so voice and lips leave together.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av
import numpy as np

from presenter.audio.io import ANALYSIS_RATE, PLAYBACK_RATE, StreamResampler, as_float_mono
from presenter.errors import UserError
from presenter.motion.base import FPS, MouthDriver, empty_poses, is_rest
from presenter.render.base import Renderer
from presenter.stream.frames import IdleFrames, audio_frame, video_frame

log = logging.getLogger(__name__)

FRAME_S = 1.0 / FPS
OUT_FRAME = PLAYBACK_RATE // FPS               # 1920 samples of 48 kHz audio per video frame
DECIMATE = PLAYBACK_RATE // ANALYSIS_RATE      # 3
INGEST_SLICE_S = 0.2                           # most audio resampled or driven in one step (_ingest, _motion)


@dataclass(frozen=True)
class StreamConfig:
    buffer_s: float = 0.12       # audio held before playback starts (see the module docstring)
    render_lead_s: float = 0.025  # a frame's render starts this long before the frame is due
    max_pending_s: float = 300.0  # push_audio refuses audio beyond this much not yet played
    live: bool = False           # a real-time source (microphone, WebRTC): after a stall, silence
                                 # (never speech) is skipped until the delay is back near buffer_s
    live_slack_s: float = 0.02   # delay above buffer_s tolerated before silence is skipped
    max_extra_s: float = 0.08    # live: most delay added to buffer_s while poses come late (see _plan)
    extra_decay_frames: int = 250  # live: on-time spoken frames after which one frame of it is given back
    degrade_misses: int = 3      # renders that miss their frame, among the last DEGRADE_WINDOW tried, that
                                 # switch to the renderer's cheaper `fallback` (0 = never)
    degrade_hold_frames: int = 250  # frames drawn by the fallback before the full renderer is tried again

    def __post_init__(self) -> None:
        if not 0.0 <= self.render_lead_s < FRAME_S:
            raise UserError(f"render_lead_s={self.render_lead_s}: must be in [0, {FRAME_S})")
        if self.buffer_s < 0 or self.max_pending_s <= self.buffer_s:
            raise UserError(f"buffer_s={self.buffer_s}, max_pending_s={self.max_pending_s}: "
                            "need 0 <= buffer_s < max_pending_s")


@dataclass
class StreamChunk:
    """One 40 ms step of the output: a video frame and the audio that plays with it."""
    index: int                      # frame number n; video pts = n * 3600 (1/90000), audio pts = n * 1920 (1/48000)
    video: av.VideoFrame            # yuv420p, labelled synthetic
    audio: av.AudioFrame            # s16 mono 48 kHz, 1920 samples
    pose: np.ndarray | None         # mouth pose (P,) shown, None for the idle frame as is
    reused: bool                    # the render was late: the previous frame was sent again
    render_s: float | None          # renderer + label + colour conversion time, when rendered
    latency_s: float | None         # how long the audio in this chunk waited since push_audio, when speaking
    av_offset_s: float              # pose time minus audio time (> 0: the lips show later speech); 0 when on time
    degraded: bool = False          # its render went to the renderer's cheaper fallback (overload, see _Degrade)


@dataclass
class StreamStats:
    frames: int = 0
    reused: int = 0                 # frames sent again because a render was late
    late_poses: int = 0             # frames whose pose was not ready: the last pose was held
    underruns: int = 0              # playback ran out of audio before a flush (input too slow)
    skipped_silence: int = 0        # live sources: silent 40 ms steps skipped to win back delay
    held_silence: int = 0           # live sources: silent 40 ms steps held back to add delay for late poses
    extra_delay_s: float = 0.0      # live sources: delay added to buffer_s because poses came late
    playing_frames: int = 0         # frames that carried pushed audio
    pending_s: float = 0.0          # audio pushed and not yet played
    driven_s: float = 0.0           # audio fed through the mouth driver so far
    latency_s: float | None = None  # recent delay of the played audio since push_audio (smoothed)
    degraded: int = 0               # frames drawn by the renderer's cheaper fallback (overload)


DEGRADE_WINDOW = 25                            # render attempts looked back on by _Degrade


class _Degrade:
    """Sheds render cost under overload: when `misses` of the last DEGRADE_WINDOW render attempts
    missed their frame (the frame was sent again), the next `hold` frames are drawn by the
    renderer's cheaper fallback (the generator's: the baseline warp, about half the CPU); then the
    full renderer is tried again. A machine that keeps up never sees the fallback."""

    def __init__(self, misses: int, hold: int) -> None:
        self.misses, self.hold = misses, hold
        self._recent: collections.deque[bool] = collections.deque(maxlen=DEGRADE_WINDOW)
        self._until = -1                          # frames before this one use the fallback

    def active(self, n: int) -> bool:
        return n < self._until

    def note(self, n: int, missed: bool) -> None:
        """A render was tried for frame n; missed: it was not ready in time."""
        if self.misses <= 0 or self.active(n):
            return
        self._recent.append(missed)
        if sum(self._recent) >= self.misses:
            self._until = n + self.hold
            self._recent.clear()
            log.warning("renders are missing their frames (%d of the last %d): the next %d frames use the "
                        "cheaper renderer", self.misses, DEGRADE_WINDOW, self.hold)


@dataclass
class _Item:
    pcm: np.ndarray | None          # (n,) float32 mono, None for a flush marker
    rate: int
    t: float                        # loop time of the push


@dataclass
class _Plan:
    generation: int
    audio: np.ndarray               # (OUT_FRAME,) float32
    pose: np.ndarray | None
    latency_s: float | None
    av_offset_s: float


class _Ring:
    """The playback ring: 48 kHz mono audio in arrival order, with each segment's push time."""

    def __init__(self) -> None:
        self.segments: collections.deque[tuple[int, np.ndarray, float]] = collections.deque()  # (start, samples, t)
        self.written = 0
        self.read = 0

    def append(self, samples: np.ndarray, t: float) -> None:
        if len(samples):
            self.segments.append((self.written, samples, t))
            self.written += len(samples)

    @property
    def buffered(self) -> int:
        return self.written - self.read

    def take(self, n: int) -> tuple[np.ndarray, float | None]:
        """n samples from the read position (zero-padded past the end) and the push time of the first."""
        out = np.zeros(n, np.float32)
        t_first = None
        pos, got = self.read, 0
        while self.segments and got < n:
            start, seg, t = self.segments[0]
            off = pos - start
            k = min(len(seg) - off, n - got)
            out[got:got + k] = seg[off:off + k]
            t_first = t if t_first is None else t_first
            got += k
            pos += k
            if off + k == len(seg):
                self.segments.popleft()
        self.read += n
        if self.read > self.written:                  # ran dry: playback resumes at the write position
            self.read = self.written
        return out, t_first


class PresenterStream:
    """See the module docstring. Create and use it on one event loop; it owns its ingest task."""

    def __init__(self, renderer: Renderer, driver: MouthDriver, *, idle: IdleFrames, pool: ThreadPoolExecutor,
                 config: StreamConfig = StreamConfig(),
                 on_stage: Callable[[str, float], None] | None = None) -> None:
        """renderer: draws frame n with a mouth pose; driver: audio -> poses (fed only from the pool);
        idle: the renderer's labelled idle loop; pool: the bounded worker pool for heavy work;
        on_stage: called on the loop with (stage name, seconds) for each ingest and render step."""
        self.renderer = renderer
        self.driver = driver
        self.idle = idle
        self.cfg = config
        self.stats = StreamStats()
        self._pool = pool
        self._on_stage = on_stage or (lambda stage, seconds: None)
        self._inbox: list[_Item] = []
        self._inbox_s = 0.0                           # seconds of audio waiting in the inbox
        self._wake = asyncio.Event()
        self._generation = 0
        self._reset_next = False
        self._ring = _Ring()
        self._poses: collections.deque[np.ndarray] = collections.deque()
        self._poses_base = 0                          # ring frame index of _poses[0]
        self._poses_end = 0                           # ring frame index after the last pose
        self._last_pose: np.ndarray | None = None
        self._last_pose_k = 0                         # ring frame index the last pose belongs to
        self._on_time = 0                             # spoken frames whose pose was ready, since the last late one
        self._playing = False
        self._flushed = False
        self._closed = False
        self._iterating = False
        self._ingest_task: asyncio.Task | None = None
        self._motion_task: asyncio.Task | None = None
        self._speech: list[_Item] = []                # 16 kHz audio and flush markers for the driver
        self._speech_wake = asyncio.Event()
        self._reset_driver = False
        self._fallback: Renderer | None = getattr(renderer, "fallback", None)
        self._degrade = _Degrade(config.degrade_misses if self._fallback is not None else 0,
                                 config.degrade_hold_frames)
        # Owned by the ingest stage.
        self._rs48 = StreamResampler(PLAYBACK_RATE)
        self._rs16 = StreamResampler(ANALYSIS_RATE)
        self._fed48 = 0
        self._fed16 = 0

    # --- input -------------------------------------------------------------------------------

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Queue speech: PCM (n,) or (n, C), int16 or float in [-1, 1], at sample_rate Hz.

        Returns at once; call on the stream's loop (from another thread: loop.call_soon_threadsafe)."""
        if self._closed:
            raise UserError("the stream is closed")
        mono = as_float_mono(pcm)
        if not 8000 <= int(sample_rate) <= 192000:
            raise UserError(f"sample rate {sample_rate} Hz is out of range: use 8000..192000 Hz")
        pending = self._pending_s() + len(mono) / sample_rate
        if pending > self.cfg.max_pending_s:
            raise UserError(f"{pending:.1f} s of audio would be waiting to play, more than the "
                            f"{self.cfg.max_pending_s:.0f} s allowed: push audio closer to real time")
        self._inbox.append(_Item(mono, int(sample_rate), asyncio.get_running_loop().time()))
        self._inbox_s += len(mono) / sample_rate
        self._start()
        self._wake.set()

    def flush(self) -> None:
        """The speech pushed so far is complete: play it out without waiting for more audio."""
        self._inbox.append(_Item(None, 0, asyncio.get_running_loop().time()))
        self._start()
        self._wake.set()

    def interrupt(self) -> None:
        """Barge-in: drop all speech not yet played; the next frame (<= 40 ms) is the idle loop."""
        self._generation += 1
        self._reset_next = self._reset_driver = True
        self._inbox.clear()
        self._speech.clear()
        self._inbox_s = 0.0
        self._ring = _Ring()
        self._poses.clear()
        self._poses_base = self._poses_end = 0
        self._last_pose = None
        self._last_pose_k = 0
        self._playing = self._flushed = False
        log.debug("stream interrupted (generation %d)", self._generation)

    def _pending_s(self) -> float:
        return self._inbox_s + self._ring.buffered / PLAYBACK_RATE

    def _start(self) -> None:
        if self._ingest_task is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._ingest_task = loop.create_task(self._ingest(), name="presenter-ingest")
            self._motion_task = loop.create_task(self._motion(), name="presenter-motion")

    async def _ingest(self) -> None:
        """Audio stage: inbox -> resampled -> playback ring (48 kHz) and speech queue (16 kHz).

        Resampling costs ~0.1 ms per 20 ms of audio, so it runs on the loop, INGEST_SLICE_S at a
        time: the voice never queues behind model work in the pool."""
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self._inbox and not self._closed:
                run, self._inbox = _first_run(self._inbox, INGEST_SLICE_S)
                self._inbox_s = sum(len(it.pcm) / it.rate for it in self._inbox if it.pcm is not None)
                reset, self._reset_next = self._reset_next, False
                for samples, a16, t, flushed in self._resample(run, reset):
                    self._ring.append(samples, t)
                    self._flushed = self._flushed or flushed
                    self._speech.append(_Item(a16, ANALYSIS_RATE, t))
                    if flushed:
                        self._speech.append(_Item(None, 0, t))
                self._speech_wake.set()
                await asyncio.sleep(0)                # let the clock and the network in between slices

    def _resample(self, items: list[_Item], reset: bool) -> list[tuple[np.ndarray, np.ndarray, float, bool]]:
        """Pushed chunks -> [(48 kHz for the ring, 16 kHz for the driver, push time, ends a flush)]."""
        if reset:
            self._rs48, self._rs16 = StreamResampler(PLAYBACK_RATE), StreamResampler(ANALYSIS_RATE)
            self._fed48 = self._fed16 = 0
        out = []
        for it in items:
            if it.pcm is not None:
                a48 = self._rs48(it.pcm, it.rate)
                a16 = self._rs16(a48, PLAYBACK_RATE)
                self._fed48 += len(a48)
                self._fed16 += len(a16)
                out.append((a48, a16, it.t, False))
                continue
            # Flush: release the filters' tails and pad the ring to a whole frame with silence,
            # so ring frames and driver frames stay the same grid.
            a48 = self._rs48.flush()
            a48 = np.concatenate([a48, np.zeros((-(self._fed48 + len(a48))) % OUT_FRAME, np.float32)])
            self._fed48 += len(a48)
            a16 = np.concatenate([self._rs16(a48, PLAYBACK_RATE), self._rs16.flush()])
            want = max(0, self._fed48 // DECIMATE - self._fed16)
            a16 = a16[:want] if len(a16) >= want else np.concatenate([a16, np.zeros(want - len(a16), np.float32)])
            self._fed16 += len(a16)
            out.append((a48, a16, it.t, True))
        return out

    async def _motion(self) -> None:
        """Motion stage: speech queue -> MouthDriver -> poses, a slice at a time, so a long push
        (a whole TTS utterance) speaks as soon as its first slice is driven."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await self._speech_wake.wait()
            self._speech_wake.clear()
            while self._speech and not self._closed:
                generation = self._generation
                piece, self._speech = _first_run(self._speech, INGEST_SLICE_S)
                reset, self._reset_driver = self._reset_driver, False
                behind = self._play_frame() - self._poses_end if self._playing else 0   # played, no pose yet
                t0 = time.perf_counter()
                try:
                    poses = await loop.run_in_executor(self._pool, self._drive, piece, reset,
                                                       behind + 1 if behind > 0 else 0)
                except Exception:
                    log.exception("mouth driver failed; %d chunks dropped, it starts afresh", len(piece))
                    self._reset_driver = True
                    continue
                self._on_stage("motion", time.perf_counter() - t0)
                if generation != self._generation:
                    continue                          # interrupted while this ran: drop it
                self.stats.driven_s += sum(len(it.pcm) for it in piece if it.pcm is not None) / ANALYSIS_RATE
                self._poses.extend(poses)
                self._poses_end += len(poses)

    def _drive(self, items: list[_Item], reset: bool, skip: int) -> np.ndarray:
        """Pool job: feed the driver 16 kHz audio and flushes -> poses (F, P)."""
        if reset:
            self.driver.reset()
        if skip:
            self.driver.skip(skip)
        poses = []
        for it in items:
            poses.append(self.driver.push(it.pcm) if it.pcm is not None else self.driver.flush())
        return np.concatenate(poses) if poses else empty_poses()

    def _play_frame(self) -> int:
        """Ring frame index that plays next."""
        return (self._ring.read + OUT_FRAME // 2) // OUT_FRAME

    # --- output ------------------------------------------------------------------------------

    def _plan(self, now: float) -> _Plan:
        """Take the audio and pose for the next frame (on the loop; cheap)."""
        silent = _Plan(self._generation, np.zeros(OUT_FRAME, np.float32), None, None, 0.0)
        ring = self._ring
        k = self._play_frame()                          # the ring frame this audio belongs to
        if not self._playing:
            held = ring.buffered >= self.cfg.buffer_s * PLAYBACK_RATE or (self._flushed and ring.buffered > 0)
            if held and self._poses_end > k:            # and the first frame's pose is ready
                self._playing = True
            else:
                return silent
        self._drop_poses_before(k)
        if self.cfg.live:
            # The delay follows the pipeline: silences are shortened while it is above target
            # (after a stall) and lengthened while below (the target grew because poses came late).
            target = (self.cfg.buffer_s + self.stats.extra_delay_s) * PLAYBACK_RATE
            silent_next = len(self._poses) >= 2 and is_rest(self._poses[0]) and is_rest(self._poses[1])
            if silent_next and ring.buffered + OUT_FRAME < target:
                self.stats.held_silence += 1
                return silent
            while ring.buffered - OUT_FRAME > target + self.cfg.live_slack_s * PLAYBACK_RATE and silent_next:
                ring.take(OUT_FRAME)                    # a silent frame: skip it
                self.stats.skipped_silence += 1
                k += 1
                self._drop_poses_before(k)
                silent_next = len(self._poses) >= 2 and is_rest(self._poses[0]) and is_rest(self._poses[1])
        audio, t_push = ring.take(OUT_FRAME)
        if self._poses and self._poses_base == k:
            pose = self._poses.popleft()
            self._poses_base += 1
            self._last_pose, self._last_pose_k = pose, k
            self._on_time += not is_rest(pose)
            if self._on_time >= self.cfg.extra_decay_frames and self.stats.extra_delay_s > 0:
                self.stats.extra_delay_s = max(0.0, self.stats.extra_delay_s - FRAME_S)
                self._on_time = 0
        else:                                           # the driver is behind: hold the last pose
            self.stats.late_poses += 1
            pose = self._last_pose
            if self.cfg.live:
                self.stats.extra_delay_s = min(self.cfg.max_extra_s, self.stats.extra_delay_s + FRAME_S)
                self._on_time = 0
        av_offset = 0.0 if pose is None else (self._last_pose_k - k) * FRAME_S
        if ring.buffered == 0:                          # ran dry: wait for buffer_s (or a flush) again
            self._playing = False
            if not self._flushed:
                self.stats.underruns += 1
            self._flushed = False
        self.stats.playing_frames += 1
        shown = None if pose is None or is_rest(pose) else pose
        return _Plan(self._generation, audio, shown, None if t_push is None else now - t_push, av_offset)

    def _drop_poses_before(self, k: int) -> None:
        while self._poses and self._poses_base < k:
            self._poses.popleft()
            self._poses_base += 1

    def _render(self, index: int, pose: np.ndarray, renderer: Renderer) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        yuv = self.idle.compose(renderer.render(index, pose))
        return yuv, time.perf_counter() - t0

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self._run()

    async def _run(self) -> AsyncIterator[StreamChunk]:
        if self._iterating:
            raise RuntimeError("a PresenterStream has one consumer; fan out its chunks instead")
        self._iterating = True
        loop = asyncio.get_running_loop()
        lead = self.cfg.render_lead_s
        t0 = loop.time() + lead
        last_yuv = self.idle.yuv(0)
        late: asyncio.Future | None = None                   # a render that missed its frame, still running
        n = 0
        try:
            while not self._closed:
                due = t0 + n * FRAME_S
                await asyncio.sleep(max(0.0, due - lead - loop.time()))
                if self._closed:
                    break
                plan = self._plan(due)
                job, cheap = None, False
                if plan.pose is not None and (late is None or late.done()):
                    cheap = self._degrade.active(n)
                    self.stats.degraded += cheap
                    job = loop.run_in_executor(self._pool, self._render, n, plan.pose,
                                               self._fallback if cheap else self.renderer)
                await asyncio.sleep(max(0.0, due - loop.time()))
                yuv, reused, render_s = self.idle.yuv(n), False, None
                if plan.generation != self._generation:      # interrupted since planning
                    plan = _Plan(self._generation, np.zeros(OUT_FRAME, np.float32), None, None, 0.0)
                    if job is not None:
                        job.add_done_callback(_discard)
                elif plan.pose is not None and job is None:  # the last render is still running: skip this one
                    yuv, reused = last_yuv, True
                    self.stats.reused += 1
                    self._degrade.note(n, True)
                elif job is not None:
                    self._degrade.note(n, not job.done())
                    if job.done() and job.exception() is None:
                        yuv, render_s = job.result()
                        self._on_stage("render", render_s)
                    else:
                        if not job.done():
                            job.add_done_callback(_discard)
                            late = job                           # no new render until it ends
                        else:
                            log.error("render of frame %d failed: %r", n, job.exception())
                        yuv, reused = last_yuv, True
                        self.stats.reused += 1
                last_yuv = yuv
                if plan.latency_s is not None:
                    prev = self.stats.latency_s
                    self.stats.latency_s = plan.latency_s if prev is None else 0.9 * prev + 0.1 * plan.latency_s
                self.stats.frames += 1
                self.stats.pending_s = self._pending_s()
                yield StreamChunk(n, video_frame(yuv, n, FPS), audio_frame(plan.audio, n), plan.pose, reused,
                                  render_s, plan.latency_s, plan.av_offset_s, cheap)
                n += 1
        finally:
            self._iterating = False

    async def close(self) -> None:
        """Stop the clock and the audio and motion tasks. Idempotent."""
        self._closed = True
        self._wake.set()
        self._speech_wake.set()
        tasks = [t for t in (self._ingest_task, self._motion_task) if t is not None]
        self._ingest_task = self._motion_task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _slices(items: list[_Item], max_s: float) -> Iterator[list[_Item]]:
    """Items in order, cut into runs of at most max_s seconds of audio (long chunks split);
    a flush marker ends the run it is in."""
    while items:
        run, items = _first_run(items, max_s)
        yield run


def _first_run(items: list[_Item], max_s: float) -> tuple[list[_Item], list[_Item]]:
    """(the first run of `_slices`, the items after it)."""
    run, run_s = [], 0.0
    for i, it in enumerate(items):
        if it.pcm is None:
            return run + [it], items[i + 1:]
        n = min(len(it.pcm), max(1, int(round((max_s - run_s) * it.rate))))
        run.append(_Item(it.pcm[:n], it.rate, it.t))
        run_s += n / it.rate
        if run_s >= max_s - 1e-9:
            rest = [_Item(it.pcm[n:], it.rate, it.t)] if n < len(it.pcm) else []
            return run, rest + items[i + 1:]
    return run, []


def _discard(fut: asyncio.Future) -> None:
    """Consume a late or superseded render's result (or error) so nothing is logged as unretrieved."""
    if not fut.cancelled():
        fut.exception()
