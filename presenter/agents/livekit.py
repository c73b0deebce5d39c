"""Presenter as a LiveKit Agents avatar: the agent's speech in, a 25 fps talking face with the
delayed speech out, on this machine's CPU.

LiveKit's local-avatar contract (livekit-agents 1.8, `livekit.agents.voice.avatar`): an
`AvatarRunner` reads the agent's audio from an `AudioReceiver`, feeds it to a `VideoGenerator`
and publishes what the generator yields through an `AVSynchronizer`. `PresenterVideoGenerator`
is that generator; `PresenterAvatar` wires it up in the agent's own process, the way bitHuman's
local mode does:

    avatar = PresenterAvatar(pipeline=load_pipeline("default"))
    await avatar.start(agent_session, room=ctx.room)      # before agent_session.start(...)

or, as a separate avatar worker in the room, `start_runner(room, generator, DataStreamAudioReceiver(room))`
beside `DataStreamAudioOutput` in the agent. `RoomlessRunner` runs the same loops with no room
(self-tests, checks where no LiveKit server runs).

The generator (names as in LiveKit's `VideoGenerator`):

    push_audio(rtc.AudioFrame), any rate, mono or stereo -> pushed into a PresenterStream
    push_audio(AudioSegmentEnd)                           -> flush: the segment plays out without more audio
    clear_buffer()                                        -> barge-in: pending speech (and its segment end)
                                                             dropped; the next frame (<= 40 ms) is idle
    async for item in generator:
      every 40 ms                                        <- rtc.VideoFrame, I420, the avatar's size; the
                                                             idle loop in silence
      right after it, while speaking                     <- rtc.AudioFrame: the input audio delayed by the
                                                             stream's latency, 48 kHz mono s16, 1920 samples
      after a segment's last audio frame                 <- AudioSegmentEnd (the runner then tells the agent
                                                             that playback finished)

The generator paces itself on the stream's 25 fps clock; the runner's AVSynchronizer paces again
at the same rate. One `Pipeline` (`presenter.stream.pipeline.load_pipeline`) serves any number of
generators; each generator owns its stream and its worker pool.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import numpy as np

from presenter.agents.session import Playout, PresenterSession
from presenter.errors import UserError
from presenter.motion.base import FPS
from presenter.stream.frames import AUDIO_RATE
from presenter.stream.pipeline import Pipeline
from presenter.stream.stream import FRAME_S, OUT_FRAME, PresenterStream, StreamConfig

try:
    from livekit import rtc
    from livekit.agents import AgentSession, get_job_context
    from livekit.agents.voice.avatar import (
        AudioReceiver,
        AudioSegmentEnd,
        AvatarOptions,
        AvatarRunner,
        QueueAudioOutput,
        VideoGenerator,
    )
except ModuleNotFoundError as e:
    raise ImportError(f"presenter.agents.livekit needs LiveKit Agents ({e.name} is missing): "
                      "pip install 'presenter[livekit]'") from e

log = logging.getLogger(__name__)

Output = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd


class PresenterVideoGenerator(VideoGenerator):
    """See the module docstring."""

    def __init__(self, *, pipeline: Pipeline | None = None, avatar: str = "default", engine: str = "auto",
                 renderer: str = "auto", workers: int = 2, stream_config: StreamConfig | None = None) -> None:
        """pipeline: a loaded presenter pipeline, shared between generators; None loads
        `load_pipeline(avatar, engine, renderer)` at `start` or first use (~1-6 s).
        workers: threads of this generator's pool (motion, render); one per core.
        stream_config: None holds audio for the pipeline's `audio_delay_s` (its driver's look-ahead
        and compute time + 80 ms)."""
        self._session = PresenterSession(pipeline=pipeline, avatar=avatar, engine=engine, renderer=renderer,
                                         workers=workers, stream_config=stream_config,
                                         thread_name="presenter-livekit")
        self._generation = 0                              # bumped by each clear_buffer
        self._playout: Playout[AudioSegmentEnd] = Playout()   # segment ends held behind their speech
        self._ends: list[AudioSegmentEnd] = []            # segment ends whose speech has all played

    @property
    def stream(self) -> PresenterStream | None:
        """The running stream (its `stats`: frames, reused, latency), None before `start` and after `aclose`."""
        return self._session.stream

    @property
    def pipeline(self) -> Pipeline | None:
        return self._session.pipeline

    @property
    def avatar_options(self) -> AvatarOptions:
        """The AvatarRunner's options for this face: frame size, 25 fps, 48 kHz mono. Needs `start`."""
        if self._session.pipeline is None:
            raise RuntimeError("avatar_options needs the pipeline: await generator.start() first")
        h, w = self._session.pipeline.pack.frames.shape[1:3]
        return AvatarOptions(video_width=w & ~1, video_height=h & ~1, video_fps=FPS,
                             audio_sample_rate=AUDIO_RATE, audio_channels=1)

    async def start(self) -> None:
        """Load the pipeline if none was given and start the stream. Idempotent."""
        await self._session.open()

    async def aclose(self) -> None:
        """Stop the stream and the pool; iteration ends."""
        await self._session.close()

    # --- audio in ------------------------------------------------------------------------------

    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        stream = await self._session.open()
        if isinstance(frame, AudioSegmentEnd):
            stream.flush()
            if not self._playout.hold(frame):                 # nothing left to play: end it now
                self._ends.append(frame)
            return
        pcm = np.frombuffer(frame.data, np.int16).reshape(-1, frame.num_channels)
        if not len(pcm):
            return
        try:
            stream.push_audio(pcm, frame.sample_rate)
        except UserError as e:
            log.error("presenter: audio dropped: %s", e)
            return
        self._playout.push(len(pcm) / frame.sample_rate)

    def clear_buffer(self) -> None:
        """Barge-in: drop the speech not yet played (and its segment end: the runner reports the
        interruption itself); the next frame is idle."""
        self._generation += 1
        if self._session.stream is not None:
            self._session.stream.interrupt()
        self._playout.clear()
        self._ends.clear()

    # --- frames out ----------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Output]:
        return self._frames()

    async def _frames(self) -> AsyncIterator[Output]:
        stream = await self._session.open()
        async for chunk in stream:
            generation, pushes = self._generation, self._playout.pushes
            empty = stream.stats.pending_s == 0                    # as of this chunk
            speaking = chunk.latency_s is not None                  # the chunk carries pushed audio
            yuv = chunk.video.to_ndarray()                          # (H * 3 / 2, W) I420 planes
            yield rtc.VideoFrame(chunk.video.width, chunk.video.height, rtc.VideoBufferType.I420, yuv.tobytes())
            if generation != self._generation:                     # cleared while the runner took the frame
                continue
            if speaking:
                yield rtc.AudioFrame(chunk.audio.to_ndarray().tobytes(), AUDIO_RATE, 1, OUT_FRAME)
                if generation != self._generation:
                    continue
                self._playout.play(FRAME_S)
            ends, self._ends = self._ends, []
            for end in ends + self._playout.release(idle=not speaking and empty and pushes == self._playout.pushes):
                yield end


class PresenterAvatar:
    """Presenter as the face of an `AgentSession`, in the agent's own process (like bitHuman's
    local mode): the session's audio output becomes a `QueueAudioOutput` read by an `AvatarRunner`
    that publishes the face and the delayed voice in the agent's room."""

    def __init__(self, *, pipeline: Pipeline | None = None, avatar: str = "default", engine: str = "auto",
                 renderer: str = "auto", workers: int = 2, stream_config: StreamConfig | None = None) -> None:
        """Arguments as `PresenterVideoGenerator`'s."""
        self.generator = PresenterVideoGenerator(pipeline=pipeline, avatar=avatar, engine=engine, renderer=renderer,
                                                 workers=workers, stream_config=stream_config)
        self.runner: AvatarRunner | None = None

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        """Call before `agent_session.start(...)`; the job's shutdown closes it (or call `aclose`)."""
        await self.generator.start()
        audio = QueueAudioOutput()                                   # any rate: the stream resamples
        self.runner = await start_runner(room, self.generator, audio)
        agent_session.output.audio = audio
        job = get_job_context(required=False)
        if job is not None:
            job.add_shutdown_callback(self.aclose)

    async def aclose(self) -> None:
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.aclose()
        await self.generator.aclose()


async def start_runner(room: rtc.Room, generator: PresenterVideoGenerator, audio: AudioReceiver) -> AvatarRunner:
    """An AvatarRunner for `generator` in `room`, reading `audio` (a QueueAudioOutput in the agent's
    process, or a DataStreamAudioReceiver(room) in a separate avatar worker), started."""
    await generator.start()
    runner = AvatarRunner(room, audio_recv=audio, video_gen=generator, options=generator.avatar_options)
    await runner.start()
    return runner


class RoomlessRunner:
    """AvatarRunner's two loops without a room: `audio_recv` (a QueueAudioOutput) into the
    generator, and the generator's frames into an AVSynchronizer over LiveKit's native
    AudioSource and VideoSource, which run unpublished; `on_item` sees every item the generator
    yields, in order. Barge-in and playback notices go through `audio_recv` as AvatarRunner's do.
    For self-tests and checks where no LiveKit server runs: nothing leaves the process. Make
    `audio_recv` inside the running loop (LiveKit's channels bind to the loop they are made in).

        async with RoomlessRunner(generator, QueueAudioOutput(), on_item=items.append) as runner:
            await runner.audio_recv.capture_frame(frame); runner.audio_recv.flush()
    """

    def __init__(self, generator: PresenterVideoGenerator, audio_recv: AudioReceiver, *,
                 on_item: Callable[[Output], None] | None = None) -> None:
        self.generator = generator
        self.audio_recv = audio_recv
        self._on_item = on_item or (lambda item: None)
        self._tasks: list[asyncio.Task] = []
        self._closers: list[Callable[[], object]] = []
        self.av_sync: rtc.AVSynchronizer | None = None
        self._receiving = False                        # a segment's audio came in and has not ended
        self._playing_s = 0.0                          # speech sent since the segment started
        self._notices: set[asyncio.Task] = set()       # interruption notices under way

    async def start(self) -> None:
        await self.generator.start()
        await self.audio_recv.start()
        self.audio_recv.on("clear_buffer", self._on_clear_buffer)
        opts = self.generator.avatar_options
        audio_source = rtc.AudioSource(opts.audio_sample_rate, opts.audio_channels, queue_size_ms=100)
        video_source = rtc.VideoSource(opts.video_width, opts.video_height)
        self.av_sync = rtc.AVSynchronizer(audio_source=audio_source, video_source=video_source,
                                          video_fps=opts.video_fps, video_queue_size_ms=100)
        self._closers = [self.av_sync.aclose, audio_source.aclose, video_source.aclose]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_audio(), name="presenter-livekit-audio"),
                       loop.create_task(self._forward(), name="presenter-livekit-video")]

    async def _read_audio(self) -> None:
        async for frame in self.audio_recv:
            self._receiving = self._receiving or isinstance(frame, rtc.AudioFrame)
            await self.generator.push_audio(frame)

    async def _forward(self) -> None:
        async for item in self.generator:
            self._on_item(item)
            if isinstance(item, AudioSegmentEnd):
                if self._receiving:
                    self._receiving, position, self._playing_s = False, self._playing_s, 0.0
                    await _maybe_await(self.audio_recv.notify_playback_finished(position, interrupted=False))
                continue
            if isinstance(item, rtc.AudioFrame):
                # Counted as played when handed over, before any await: a barge-in while the push
                # waits must report this frame, and must not leave it to the next utterance's count.
                started, self._playing_s = self._playing_s == 0.0, self._playing_s + item.duration
                if started:
                    await _maybe_await(self.audio_recv.notify_playback_started())
            await self.av_sync.push(item)

    def _on_clear_buffer(self) -> None:
        self.generator.clear_buffer()
        if self._receiving:
            notice = _maybe_await(self.audio_recv.notify_playback_finished(self._playing_s, interrupted=True))
            task = asyncio.get_running_loop().create_task(notice)
            self._notices.add(task)
            task.add_done_callback(self._notices.discard)
        self._receiving, self._playing_s = False, 0.0

    async def aclose(self) -> None:
        """Stop both loops, the generator and the native sources. Idempotent."""
        tasks, self._tasks = self._tasks + list(self._notices), []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.audio_recv.off("clear_buffer", self._on_clear_buffer)
        await self.audio_recv.aclose()
        await self.generator.aclose()
        closers, self._closers = self._closers, []
        for close in closers:
            await _maybe_await(close())

    async def __aenter__(self) -> RoomlessRunner:
        await self.start()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


async def _maybe_await(result: object) -> None:
    """LiveKit's receivers answer notices with None or a coroutine."""
    if asyncio.iscoroutine(result):
        await result
