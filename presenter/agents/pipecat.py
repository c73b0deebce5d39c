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
import logging

import av
import cv2
import numpy as np

from presenter.agents.session import Playout, PresenterSession
from presenter.errors import UserError
from presenter.stream.frames import AUDIO_RATE
from presenter.stream.pipeline import Pipeline
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
        self._session = PresenterSession(pipeline=pipeline, avatar=avatar, engine=engine, renderer=renderer,
                                         workers=workers, stream_config=stream_config,
                                         thread_name="presenter-pipecat")
        self._sync_with_audio = sync_with_audio
        self._video_task: asyncio.Task | None = None
        self._pts0 = 0                                # Pipecat clock time of frame 0, ns
        self._generation = 0                          # bumped by each interruption
        self._playout: Playout[tuple[Frame, FrameDirection]] = Playout()   # frames held behind speech
        self._context_id: str | None = None           # TTS context of the speech being played
        self._send_lock = asyncio.Lock()              # one frame's image + audio, or an interruption

    @property
    def stream(self) -> PresenterStream | None:
        """The running session's stream (its `stats`: frames, reused, latency), None outside start..stop."""
        return self._session.stream

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        """Load the pipeline if none was given, then start the stream and its 25 fps video task."""
        await super().start(frame)
        stream = await self._session.open()
        self._pts0 = self.get_clock().get_time()
        self._video_task = self.create_task(self._send_frames(stream), "presenter-video")

    async def stop(self, frame: EndFrame) -> None:
        """EndFrame: play out what was pushed (frames held behind it included), then close."""
        await super().stop(frame)
        if self.stream is not None:
            self.stream.flush()
            wait_s = self.stream.stats.pending_s + self._playout.unplayed_s + END_GRACE_S
            try:
                await asyncio.wait_for(self._playout.drained.wait(), timeout=wait_s)
            except TimeoutError:
                log.warning("EndFrame: speech still unplayed after %.1f s; closing anyway", wait_s)
        await self._close()
        for held, direction in self._playout.release(idle=True):
            await self.push_frame(held, direction)

    async def cancel(self, frame: CancelFrame) -> None:
        """CancelFrame: stop now, dropping speech not yet played and the frames held behind it."""
        await super().cancel(frame)
        self._playout.clear()
        await self._close()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._close()

    async def _close(self) -> None:
        """Stop the video task, the stream and the pool. Idempotent."""
        task, self._video_task = self._video_task, None
        if task is not None:
            await self.cancel_task(task)
        await self._session.close()

    # --- frames in ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)        # start / stop / cancel
        if direction == FrameDirection.UPSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame) and self.stream is not None:
            await self._push_speech(frame)                   # consumed: it leaves delayed, with the face
        elif isinstance(frame, (InterruptionFrame, UserStartedSpeakingFrame)):
            async with self._send_lock:                       # no speech frame may follow it
                await self._interrupt()
                await self.push_frame(frame, direction)
        elif isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        else:
            if isinstance(frame, TTSStoppedFrame) and self.stream is not None:
                self.stream.flush()
            if not self._playout.hold((frame, direction)):          # held behind speech not yet played
                await self.push_frame(frame, direction)

    async def _push_speech(self, frame: TTSAudioRawFrame) -> None:
        pcm = np.frombuffer(frame.audio, np.int16).reshape(-1, frame.num_channels)
        if not len(pcm):
            return
        try:
            self.stream.push_audio(pcm, frame.sample_rate)
        except UserError as e:
            await self.push_error(error_msg=f"presenter: {e}", exception=e)
            return
        self._playout.push(len(pcm) / frame.sample_rate)
        self._context_id = frame.context_id

    async def _interrupt(self) -> None:
        """Barge-in: the stream drops pending speech; held frames are dropped unless uninterruptible."""
        self._generation += 1
        if self.stream is not None:
            self.stream.interrupt()
        for frame, direction in self._playout.clear():
            if not frame.interruptible:
                await self.push_frame(frame, direction)

    # --- frames out ---------------------------------------------------------------------------

    async def _send_frames(self, stream: PresenterStream) -> None:
        """Video task: one image per stream chunk, the chunk's audio after it while speaking."""
        loop = asyncio.get_running_loop()
        pool, idle = self._session.pool, self._session.pipeline.idle
        async for chunk in stream:
            generation, pushes = self._generation, self._playout.pushes
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
                    self._playout.play(FRAME_S)
                for frame, direction in self._playout.release(
                        idle=not speaking and empty and pushes == self._playout.pushes):
                    await self.push_frame(frame, direction)


def _rgb_image(video: av.VideoFrame) -> OutputImageRawFrame:
    """yuv420p VideoFrame -> OutputImageRawFrame, RGB (OpenCV: ~1 ms at 512 px)."""
    rgb = cv2.cvtColor(video.to_ndarray(), cv2.COLOR_YUV2RGB_I420)
    return OutputImageRawFrame(image=rgb.tobytes(), size=(video.width, video.height), format="RGB")


def _yuv_frame(yuv: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(yuv, format="yuv420p")
