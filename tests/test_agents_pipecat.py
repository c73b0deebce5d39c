"""PresenterVideoService in a real Pipecat pipeline: TTS audio frames in, a 25 fps face and the
delayed audio out, in order, and barge-in that leaves no speech behind it.

The pipeline is Pipecat's own (Pipeline, PipelineWorker, WorkerRunner); the service runs on the
default avatar with the loudness driver (`baseline_pipeline`), so the checks do not depend on how
fast a learned driver runs on a busy machine. Behaviour only: no wall-clock asserts."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="Pipecat is not installed: pip install 'presenter[pipecat]'")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from presenter.agents.pipecat import FRAME_NS, PresenterVideoService  # noqa: E402
from presenter.audio.io import resample  # noqa: E402

TTS_RATE = 22050          # espeak-ng's own rate: not the stream's 48 kHz
TTS_CHUNK_S = 0.05


class Sink(FrameProcessor):
    """Records every downstream frame that reaches the end of the pipeline, in order."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.frames: list[Frame] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
        await self.push_frame(frame, direction)


def run_pipeline(service: PresenterVideoService,
                 feed: Callable[[PipelineWorker, Sink], Awaitable[None]]) -> list[Frame]:
    """Run Pipeline([service, sink]) until `feed` has queued its frames and an EndFrame has passed."""
    sink = Sink()
    worker = PipelineWorker(Pipeline([service, sink]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _on_started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    async def drive() -> None:
        await asyncio.wait_for(started.wait(), timeout=60)
        await feed(worker, sink)

    async def main() -> None:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(asyncio.gather(runner.run(), drive()), timeout=120)

    asyncio.run(main())
    return sink.frames


def tts_frames(samples48: np.ndarray) -> list[TTSAudioRawFrame]:
    """48 kHz float speech -> TTSAudioRawFrames at 22,050 Hz, int16 mono, 50 ms each."""
    pcm = np.round(resample(samples48, 48000, TTS_RATE) * 32767).astype(np.int16)
    n = int(TTS_CHUNK_S * TTS_RATE)
    return [TTSAudioRawFrame(pcm[i:i + n].tobytes(), TTS_RATE, 1, context_id="c1") for i in range(0, len(pcm), n)]


async def until(cond: Callable[[], bool], *, limit_s: float = 60.0) -> None:
    """Wait (on frames arriving, not on speed) until cond() holds; fail after limit_s."""
    for _ in range(int(limit_s / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the pipeline never got there")


def mouth_moved(pipeline, image: OutputImageRawFrame, index: int) -> float:
    """Mean absolute difference (levels) in the mouth box between an image and idle frame `index`."""
    import cv2

    w, h = image.size
    rgb = np.frombuffer(image.image, np.uint8).reshape(h, w, 3)
    idle = cv2.cvtColor(pipeline.idle.yuv(index), cv2.COLOR_YUV2RGB_I420)
    x0, y0, x1, y1 = pipeline.mouth_box
    return float(np.abs(rgb[y0:y1, x0:x1].astype(np.int16) - idle[y0:y1, x0:x1]).mean())


@pytest.fixture(scope="module")
def phrase(speech_wav) -> np.ndarray:
    """The first espeak-ng phrase with 0.1 s around it, 48 kHz float."""
    start, end = speech_wav.speech[0]
    return speech_wav.samples[int((start - 0.1) * 48000):int((end + 0.1) * 48000)]


def test_tts_audio_becomes_25fps_face_with_the_same_audio_in_order(baseline_pipeline, phrase) -> None:
    """One utterance at 22,050 Hz, pushed faster than real time and ended at once: every 40 ms an RGB
    image on a 25 fps pts clock; the speech leaves as 48 kHz frames, one per image while speaking
    (as many as the audio's 25 fps count), each right after the image it plays with and the same
    audio as went in; the mouth moves on those images and rests on the idle ones; frames that came
    after the audio (text, TTSStoppedFrame, EndFrame) leave after it."""
    service = PresenterVideoService(pipeline=baseline_pipeline)

    async def feed(worker: PipelineWorker, sink: Sink) -> None:
        await until(lambda: sum(isinstance(f, OutputImageRawFrame) for f in sink.frames) >= 5)  # idle first
        await worker.queue_frames([TTSStartedFrame(context_id="c1"), *tts_frames(phrase),
                                   TTSTextFrame("hello", text_type="sentence", context_id="c1"),
                                   TTSStoppedFrame(context_id="c1"), EndFrame()])

    frames = run_pipeline(service, feed)
    kinds = [type(f) for f in frames]
    images = [f for f in frames if isinstance(f, OutputImageRawFrame)]
    audio = [f for f in frames if isinstance(f, TTSAudioRawFrame)]

    assert all(im.format == "RGB" and len(im.image) == im.size[0] * im.size[1] * 3 for im in images)
    assert all(im.size == images[0].size for im in images)
    assert np.all(np.diff([im.pts for im in images]) == FRAME_NS)      # 25 fps, no gaps, no repeats

    # Speech: one 40 ms frame per image while speaking, as many as the audio lasts at 25 fps.
    expected = len(phrase) / 48000 * 25
    assert expected - 1 <= len(audio) <= expected + 3, (len(audio), expected)
    assert all(a.sample_rate == 48000 and a.num_channels == 1 and a.num_frames == 1920 for a in audio)
    for i, k in enumerate(kinds):
        if k is TTSAudioRawFrame:
            assert kinds[i - 1] is OutputImageRawFrame and frames[i - 1].pts == frames[i].pts
    out = np.concatenate([np.frombuffer(a.audio, np.int16) for a in audio]).astype(np.float32) / 32767
    head = phrase[:len(phrase) // 2]
    lag = int(np.argmax([out[k:k + len(head)] @ head for k in range(960)]))   # within 20 ms of the start
    seg = out[lag:lag + len(phrase)]
    assert np.corrcoef(seg, phrase[:len(seg)])[0, 1] > 0.95, lag                 # the same voice

    # The mouth moves with the speech and rests on the idle frames before and after it.
    first = kinds.index(TTSAudioRawFrame) - 1
    last = len(kinds) - 1 - kinds[::-1].index(TTSAudioRawFrame)
    index = {id(im): n for n, im in enumerate(images)}
    speaking = [f for f in frames[first:last] if isinstance(f, OutputImageRawFrame)]
    resting = [f for f in frames[:first] + frames[last:] if isinstance(f, OutputImageRawFrame)]
    moved = [mouth_moved(baseline_pipeline, im, index[id(im)]) for im in speaking]
    assert np.mean(np.array(moved) > 1.0) > 0.5, moved
    assert resting and all(mouth_moved(baseline_pipeline, im, index[id(im)]) == 0 for im in resting)

    # Frames queued after the audio leave after it, in their order.
    assert kinds.index(TTSTextFrame) > last and kinds.index(TTSStoppedFrame) > kinds.index(TTSTextFrame)
    assert kinds[-1] is EndFrame


@pytest.mark.parametrize("barge_in", [InterruptionFrame, UserStartedSpeakingFrame])
def test_interruption_clears_the_buffer(baseline_pipeline, speech_wav, barge_in) -> None:
    """Barge-in mid-utterance (~6 s pushed): no speech audio and no speaking mouth leave after the
    interruption frame; the idle face goes on at 25 fps; text held behind the dropped speech is
    dropped with it; the next utterance plays."""
    service = PresenterVideoService(pipeline=baseline_pipeline)
    start, end = speech_wav.speech[0]
    long_speech = np.tile(speech_wav.samples[int(start * 48000):int(end * 48000)], 4)
    state: dict = {}

    async def feed(worker: PipelineWorker, sink: Sink) -> None:
        await worker.queue_frames([*tts_frames(long_speech), TTSTextFrame("long", text_type="sentence"),
                                   TTSStoppedFrame()])
        await until(lambda: sum(isinstance(f, TTSAudioRawFrame) for f in sink.frames) >= 10)
        await worker.queue_frame(barge_in())
        await until(lambda: any(isinstance(f, barge_in) for f in sink.frames))
        state["at"] = len(sink.frames)
        await until(lambda: sum(isinstance(f, OutputImageRawFrame) for f in sink.frames[state["at"]:]) >= 10)
        state["queued"] = len(sink.frames)
        await worker.queue_frames([*tts_frames(long_speech[:48000]), TTSStoppedFrame(), EndFrame()])

    frames = run_pipeline(service, feed)
    cut = next(i for i, f in enumerate(frames) if isinstance(f, barge_in))
    images = [f for f in frames if isinstance(f, OutputImageRawFrame)]
    index = {id(im): n for n, im in enumerate(images)}
    spoken_before = sum(isinstance(f, TTSAudioRawFrame) for f in frames[:cut])
    assert 10 <= spoken_before < len(long_speech) / 48000 * 25 - 10      # it was cut mid-utterance

    after = frames[cut + 1:state["queued"]]                              # up to the next utterance
    after_images = [f for f in after if isinstance(f, OutputImageRawFrame)]
    assert not any(isinstance(f, TTSAudioRawFrame) for f in after)
    assert len(after_images) >= 10
    assert all(mouth_moved(baseline_pipeline, im, index[id(im)]) == 0 for im in after_images)
    assert not any(isinstance(f, TTSTextFrame) for f in frames)         # held behind dropped speech
    assert np.all(np.diff([im.pts for im in images]) == FRAME_NS)
    spoken_after = sum(isinstance(f, TTSAudioRawFrame) for f in frames[state["queued"]:])
    assert 24 <= spoken_after <= 28                                      # the next 1 s utterance plays


def test_the_example_bot_talks_back_over_loopback_webrtc(tmp_path) -> None:
    """examples/pipecat_bot.py end to end: our aiortc client speaks read speech to the bot over
    WebRTC on 127.0.0.1; the bot's turn detection, echo "LLM", espeak-ng TTS and presenter's face
    answer with a 25 fps video track and a voiced audio track, over a loopback ICE pair."""
    import os
    import re
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, str(root / "examples" / "pipecat_bot.py"), "--self-test", "14",
                          "--port", str(port), "--engine", "baseline", "--renderer", "baseline"],
                         capture_output=True, text=True, timeout=240, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    m = re.search(r"self-test: (\d+) video frames \(([\d.]+) fps\), ([\d.]+) s of audio, ([\d.]+) s of it voiced; "
                  r"ICE pair (.*)", run.stdout)
    assert m, run.stdout + run.stderr[-2000:]
    frames, _, audio_s, voiced_s, pair = int(m[1]), float(m[2]), float(m[3]), float(m[4]), m[5]
    assert frames >= 100 and audio_s >= 5.0, m[0]   # both tracks flowed for most of the call
    assert voiced_s >= 0.5, m[0]                     # the bot answered: its voice came back
    assert pair.count("127.0.0.1") == 2, pair
