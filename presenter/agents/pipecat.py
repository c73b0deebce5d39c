"""Presenter as a Pipecat video service: TTS audio in, a 25 fps talking face with the delayed audio out.

It sits between the TTS service and the transport's output, where Pipecat's own avatar services
(Simli, Tavus, HeyGen) sit, and runs on this machine's CPU:

    face = PresenterVideoService(pipeline=load_pipeline("default"))
    Pipeline([transport.input(), stt, llm, tts, face, transport.output()])

Frames (downstream; anything not named passes through unchanged and in order):

    TTSAudioRawFrame, any rate, mono or stereo  -> consumed: pushed into a PresenterStream
    every 40 ms from StartFrame to EndFrame     <- OutputImageRawFrame: RGB, pts on a 25 fps clock (ns),
                                                   sync_with_audio (the transport shows it once the
                                                   audio before it has been sent); idle loop in silence
    every 40 ms while speaking                  <- TTSAudioRawFrame: the input audio, 48 kHz mono s16,
                                                   1920 samples, delayed by the stream's latency, right
                                                   after the image it plays with (same pts)
    InterruptionFrame, UserStartedSpeakingFrame -> pending speech dropped: the next frame (<= 40 ms)
                                                   is idle, and no speech frame follows the interruption
    TTSStoppedFrame                             -> flush: the utterance's tail plays without more audio

Frames that reach the service after TTS audio (TTSStoppedFrame, text, EndFrame) are held until
that audio has played, so the transport sees them in the order it would without a face: its
bot-speaking state and word timing follow the delayed audio. EndFrame waits for the play-out;
CancelFrame stops at once.

One `Pipeline` (avatar, renderer, driver factory: `presenter.stream.pipeline.load_pipeline`)
serves any number of services; each service owns its stream, its worker pool and its video task.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from concurrent.futures import ThreadPoolExecutor

import av
import cv2
import numpy as np

from presenter.errors import UserError
from presenter.stream.frames import AUDIO_RATE
from presenter.stream.pipeline import Pipeline, load_pipeline
from presenter.stream.stream import FRAME_S, PresenterStream, StreamConfig

try:
    from pipecat.frames.frames import (
        CancelFrame,
        EndFrame,
        Frame,
        InterruptionFrame,
        OutputImageRawFrame,
        StartFrame,
        SystemFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
        UserStartedSpeakingFrame,
    )
    from pipecat.processors.frame_processor import FrameDirection
    from pipecat.services.ai_service import AIService
    from pipecat.services.settings import ServiceSettings
except ModuleNotFoundError as e:
    raise ImportError(f"presenter.agents.pipecat needs Pipecat ({e.name} is missing): "
                      "pip install 'presenter[pipecat]'") from e

log = logging.getLogger(__name__)

FRAME_NS = round(FRAME_S * 1e9)       # 40 ms in Pipecat's nanosecond pts
PLAYED_SLACK_S = 0.001                # speech counted as played (rounding: 22,050 Hz in, 48 kHz out)
END_GRACE_S = 2.0                     # EndFrame waits this long beyond the audio still to play


class PresenterVideoService(AIService):
    """See the module docstring."""

    def __init__(self, *, pipeline: Pipeline | None = None, avatar: str = "default", engine: str = "auto",
                 renderer: str = "auto", workers: int = 2, stream_config: StreamConfig | None = None,
                 sync_with_audio: bool = True, **kwargs: object) -> None:
        """pipeline: a loaded presenter pipeline, shared between services; None loads
        `load_pipeline(avatar, engine, renderer)` at StartFrame (~1-6 s).
        workers: threads of this service's pool (motion, render, colour conversion); one per core.
        stream_config: None holds audio for the pipeline's `audio_delay_s` (its driver's look-ahead
        and compute time + 80 ms).
        sync_with_audio: images ride the transport's audio queue (shown once the audio before them
        has been sent; needs TransportParams(video_out_is_live=False)); False sends them to its live
        video queue (video_out_is_live=True), paced by the transport's own 25 fps clock."""
        super().__init__(settings=ServiceSettings(model=None), **kwargs)
        if workers < 1:
            raise UserError(f"workers={workers}: need at least 1 worker thread")
        self._pipeline = pipeline
        self._load_args = (avatar, engine, renderer)
        self._workers = workers
        self._stream_config = stream_config
        self._sync_with_audio = sync_with_audio
        self._pool: ThreadPoolExecutor | None = None
        self._stream: PresenterStream | None = None
        self._video_task: asyncio.Task | None = None
        self._pts0 = 0                                # Pipecat clock time of frame 0, ns
        self._generation = 0                          # bumped by each interruption
        self._pushed_s = 0.0                          # speech pushed since the last interruption, seconds
        self._played_s = 0.0                          # speech sent on since then
        self._held: collections.deque[tuple[float, Frame, FrameDirection]] = collections.deque()  # (pushed_s, ...)
        self._context_id: str | None = None           # TTS context of the speech being played
        self._pushes = 0                              # TTSAudioRawFrames taken so far
        self._drained = asyncio.Event()               # set while nothing pushed waits to be played
        self._send_lock = asyncio.Lock()              # one frame's image + audio, or an interruption

    @property
    def stream(self) -> PresenterStream | None:
        """The running session's stream (its `stats`: frames, reused, latency), None outside start..stop."""
        return self._stream

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        """Load the pipeline if none was given, then start the stream and its 25 fps video task."""
        await super().start(frame)
        if self._pipeline is None:
            self._pipeline = await asyncio.to_thread(load_pipeline, *self._load_args)
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="presenter-pipecat")
        self._stream = self._pipeline.stream(self._pool, config=self._stream_config)
        self._pts0 = self.get_clock().get_time()
        self._drained.set()
        self._video_task = self.create_task(self._send_frames(self._stream), "presenter-video")

    async def stop(self, frame: EndFrame) -> None:
        """EndFrame: play out what was pushed (frames held behind it included), then close."""
        await super().stop(frame)
        if self._stream is not None:
            self._stream.flush()
            wait_s = self._stream.stats.pending_s + (self._pushed_s - self._played_s) + END_GRACE_S
            try:
                await asyncio.wait_for(self._drained.wait(), timeout=wait_s)
            except TimeoutError:
                log.warning("EndFrame: speech still unplayed after %.1f s; closing anyway", wait_s)
        await self._close()
        while self._held:
            _, held, direction = self._held.popleft()
            await self.push_frame(held, direction)

    async def cancel(self, frame: CancelFrame) -> None:
        """CancelFrame: stop now, dropping speech not yet played and the frames held behind it."""
        await super().cancel(frame)
        self._held.clear()
        await self._close()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    async def _close(self) -> None:
        """Stop the video task, the stream and the pool. Idempotent."""
        task, self._video_task = self._video_task, None
        if task is not None:
            await self.cancel_task(task)
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # --- frames in ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)        # start / stop / cancel
        if direction == FrameDirection.UPSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame) and self._stream is not None:
            await self._push_speech(frame)                   # consumed: it leaves delayed, with the face
        elif isinstance(frame, (InterruptionFrame, UserStartedSpeakingFrame)):
            async with self._send_lock:                       # no speech frame may follow it
                await self._interrupt()
                await self.push_frame(frame, direction)
        elif isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        else:
            if isinstance(frame, TTSStoppedFrame) and self._stream is not None:
                self._stream.flush()
            await self._hold_or_push(frame, direction)

    async def _push_speech(self, frame: TTSAudioRawFrame) -> None:
        pcm = np.frombuffer(frame.audio, np.int16).reshape(-1, frame.num_channels)
        if not len(pcm):
            return
        try:
            self._stream.push_audio(pcm, frame.sample_rate)
        except UserError as e:
            await self.push_error(error_msg=f"presenter: {e}", exception=e)
            return
        self._pushed_s += len(pcm) / frame.sample_rate
        self._pushes += 1
        self._context_id = frame.context_id
        self._drained.clear()

    async def _hold_or_push(self, frame: Frame, direction: FrameDirection) -> None:
        """Push now, or hold behind speech not yet played (in order)."""
        if self._held or self._pushed_s > self._played_s + PLAYED_SLACK_S:
            self._held.append((self._pushed_s, frame, direction))
            self._drained.clear()
        else:
            await self.push_frame(frame, direction)

    async def _interrupt(self) -> None:
        """Barge-in: the stream drops pending speech; held frames are dropped unless uninterruptible."""
        self._generation += 1
        if self._stream is not None:
            self._stream.interrupt()
        self._pushed_s = self._played_s = 0.0
        held, self._held = self._held, collections.deque()
        for _, frame, direction in held:
            if not frame.interruptible:
                await self.push_frame(frame, direction)
        self._drained.set()

    # --- frames out ---------------------------------------------------------------------------

    async def _send_frames(self, stream: PresenterStream) -> None:
        """Video task: one image per stream chunk, the chunk's audio after it while speaking."""
        loop = asyncio.get_running_loop()
        pool, idle = self._pool, self._pipeline.idle
        async for chunk in stream:
            generation, pushes = self._generation, self._pushes
            empty = stream.stats.pending_s == 0                    # as of this chunk
            image = await loop.run_in_executor(pool, _rgb_image, chunk.video)
            async with self._send_lock:                           # an interruption waits for this frame
                speaking = chunk.latency_s is not None             # the chunk carries pushed audio
                if generation != self._generation and (speaking or chunk.pose is not None):
                    image = _rgb_image(_yuv_frame(idle.yuv(chunk.index)))   # interrupted meanwhile (~1 ms)
                    speaking = False
                image.pts = self._pts0 + chunk.index * FRAME_NS
                image.sync_with_audio = self._sync_with_audio
                await self.push_frame(image)
                if speaking:
                    audio = TTSAudioRawFrame(chunk.audio.to_ndarray().tobytes(), AUDIO_RATE, 1,
                                             context_id=self._context_id)
                    audio.pts = image.pts
                    await self.push_frame(audio)
                    self._played_s += FRAME_S
                await self._release(idle=not speaking and empty and pushes == self._pushes)

    async def _release(self, *, idle: bool) -> None:
        """Push the held frames whose speech has played (all of them once the stream is idle)."""
        while self._held and (idle or self._held[0][0] <= self._played_s + PLAYED_SLACK_S):
            _, frame, direction = self._held.popleft()
            await self.push_frame(frame, direction)
        if idle and not self._held:
            self._pushed_s = self._played_s = 0.0
            self._drained.set()


def _rgb_image(video: av.VideoFrame) -> OutputImageRawFrame:
    """yuv420p VideoFrame -> OutputImageRawFrame, RGB (OpenCV: ~1 ms at 512 px)."""
    rgb = cv2.cvtColor(video.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return OutputImageRawFrame(image=rgb.tobytes(), size=(video.width, video.height), format="RGB")


def _yuv_frame(yuv: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")
