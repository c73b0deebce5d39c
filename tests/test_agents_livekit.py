"""PresenterVideoGenerator against LiveKit's own avatar classes, without a LiveKit server.

A LiveKit server (a Go binary, not on PyPI, Debian or npm) cannot run here, so no room is joined
and nothing is published. LiveKit's `AvatarRunner` runs only as far as it can in an unconnected
room (it reads the agent's audio into the generator; its video loop waits for the connection).
`RoomlessRunner` runs the runner's two loops with LiveKit's real parts around our generator:
the agent's audio goes through a `QueueAudioOutput` (as an AgentSession's output would),
`clear_buffer` and the playback notices through its events, and what the generator yields goes
into an `AVSynchronizer` over native `AudioSource` and `VideoSource`, which run room-less.
Speech is real read speech (pocketsphinx-testdata) at 24 kHz, a common TTS rate, in 20 ms
frames. The face uses the loudness driver and the baseline renderer, so the checks do not
depend on how fast a learned model runs on a busy machine. Behaviour only: no wall-clock asserts."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("livekit.agents", reason="LiveKit Agents is not installed: pip install 'presenter[livekit]'")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd, QueueAudioOutput  # noqa: E402

from presenter.agents.livekit import PresenterVideoGenerator, RoomlessRunner  # noqa: E402
from presenter.audio.io import as_float_mono, read_wav, resample  # noqa: E402

SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
TTS_RATE = 24000
TTS_FRAME = TTS_RATE // 50            # 20 ms


@pytest.fixture(scope="module")
def face(live_home: Path):
    """The default avatar with the loudness driver and the baseline renderer."""
    from presenter.stream.pipeline import load_pipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRESENTER_HOME", str(live_home))
        return load_pipeline("default", "baseline", "baseline")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Real read speech: the first 5 s of a LibriVox recording at 24 kHz, float in [-1, 1]."""
    if not SPEECH.exists():
        pytest.skip(f"{SPEECH} is missing: apt-get install pocketsphinx-testdata (scripts/setup.sh)")
    pcm, rate = read_wav(SPEECH)
    return resample(as_float_mono(pcm), rate, TTS_RATE)[:5 * TTS_RATE]


def frames_of(samples: np.ndarray) -> list[rtc.AudioFrame]:
    s16 = np.round(np.clip(samples, -1, 1) * 32767).astype(np.int16)
    return [rtc.AudioFrame(s16[i:i + TTS_FRAME].tobytes(), TTS_RATE, 1, len(s16[i:i + TTS_FRAME]))
            for i in range(0, len(s16), TTS_FRAME)]


class Runner:
    """The generator between LiveKit's QueueAudioOutput and a room-less AVSynchronizer
    (`RoomlessRunner`: AvatarRunner's loops), recording every item it yields, in order."""

    def __init__(self, generator: PresenterVideoGenerator) -> None:
        self.generator = generator
        self.items: list[rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd] = []
        self.audio: QueueAudioOutput | None = None       # made in `run`: its channel belongs to the running loop
        self.playback: list[tuple[str, float, bool]] = []  # the agent side's playback events

    def count(self, kind: type) -> int:
        return sum(isinstance(it, kind) for it in self.items)

    async def say(self, samples: np.ndarray) -> None:
        """An utterance as the agent's TTS delivers it: 20 ms frames at once, then the segment end."""
        for frame in frames_of(samples):
            await self.audio.capture_frame(frame)
        self.audio.flush()

    async def run(self, script: Callable[[Runner], Awaitable[None]]) -> None:
        self.audio = QueueAudioOutput()
        self.audio.on("playback_finished", lambda ev: self.playback.append(
            ("finished", ev.playback_position, ev.interrupted)))
        async with RoomlessRunner(self.generator, self.audio, on_item=self.items.append):
            await asyncio.wait_for(script(self), timeout=60)


async def until(cond: Callable[[], bool], *, limit_s: float = 30.0) -> None:
    """Wait (on items arriving, not on speed) until cond() holds; fail after limit_s."""
    for _ in range(int(limit_s / 0.02)):
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the generator never got there")


def mouth_moved(face, frame: rtc.VideoFrame, index: int) -> float:
    """Mean absolute difference (levels) of the luma in the mouth box between a frame and idle frame `index`."""
    w, h = frame.width, frame.height
    y = np.frombuffer(frame.data, np.uint8)[:w * h].reshape(h, w)
    idle = face.idle.yuv(index)[:h]
    x0, y0, x1, y1 = face.mouth_box
    return float(np.abs(y[y0:y1, x0:x1].astype(np.int16) - idle[y0:y1, x0:x1]).mean())


def video_index(items: list) -> dict[int, int]:
    """id(video frame) -> its frame number: the stream yields exactly one video frame per 40 ms."""
    videos = [it for it in items if isinstance(it, rtc.VideoFrame)]
    return {id(v): n for n, v in enumerate(videos)}


def test_speech_becomes_a_25fps_face_with_the_same_audio_and_a_segment_end(face, speech) -> None:
    """One 3 s utterance at 24 kHz through QueueAudioOutput: an I420 frame of the avatar's size every
    40 ms of stream time; the speech leaves as 48 kHz mono 40 ms frames, one right after each
    frame while speaking, as many as the audio lasts at 25 fps, and the same audio as went in;
    the mouth moves on those frames and rests (the idle loop exactly) on the others; one
    AudioSegmentEnd follows the last speech frame."""
    phrase = speech[:3 * TTS_RATE]
    runner = Runner(PresenterVideoGenerator(pipeline=face))

    async def script(r: Runner) -> None:
        await until(lambda: r.count(rtc.VideoFrame) >= 5)                 # idle first
        await r.say(phrase)
        await until(lambda: r.count(AudioSegmentEnd) == 1)
        at = r.count(rtc.VideoFrame)
        await until(lambda: r.count(rtc.VideoFrame) >= at + 5)             # idle after

    asyncio.run(runner.run(script))
    items, opts = runner.items, runner.generator.avatar_options
    kinds = [type(it) for it in items]
    videos = [it for it in items if isinstance(it, rtc.VideoFrame)]
    audio = [it for it in items if isinstance(it, rtc.AudioFrame)]

    assert all(v.type == rtc.VideoBufferType.I420 and (v.width, v.height) == (opts.video_width, opts.video_height)
               and len(v.data) == v.width * v.height * 3 // 2 for v in videos)
    assert opts.video_fps == 25 and opts.audio_sample_rate == 48000 and opts.audio_channels == 1

    # Speech: one 40 ms frame right after a video frame while speaking, as many as the audio lasts.
    expected = len(phrase) / TTS_RATE * 25
    assert expected - 1 <= len(audio) <= expected + 3, (len(audio), expected)
    assert all(a.sample_rate == 48000 and a.num_channels == 1 and a.samples_per_channel == 1920 for a in audio)
    assert all(kinds[i - 1] is rtc.VideoFrame for i, k in enumerate(kinds) if k is rtc.AudioFrame)
    first, last = kinds.index(rtc.AudioFrame), len(kinds) - 1 - kinds[::-1].index(rtc.AudioFrame)
    assert sum(k is rtc.VideoFrame for k in kinds[first - 1:last]) == len(audio)   # no gap: 25 fps in stream time
    out = np.concatenate([np.frombuffer(a.data, np.int16) for a in audio]).astype(np.float32) / 32767
    sent = resample(phrase, TTS_RATE, 48000)
    head = sent[:len(sent) // 2]
    lag = int(np.argmax([out[k:k + len(head)] @ head for k in range(960)]))    # within 20 ms of the start
    seg = out[lag:lag + len(sent)]
    assert np.corrcoef(seg, sent[:len(seg)])[0, 1] > 0.95, lag                  # the same voice

    # Segment end: once, right after the last speech frame (before the next video frame).
    assert kinds.count(AudioSegmentEnd) == 1
    assert kinds.index(AudioSegmentEnd) == last + 1

    # The mouth moves with the speech and rests on the idle frames before and after it.
    index = video_index(items)
    speaking = [it for it in items[first - 1:last] if isinstance(it, rtc.VideoFrame)]
    resting = [it for it in items[:first - 1] + items[last:] if isinstance(it, rtc.VideoFrame)]
    moved = [mouth_moved(face, v, index[id(v)]) for v in speaking]
    assert np.mean(np.array(moved) > 1.0) > 0.5, moved
    assert len(resting) >= 10 and all(mouth_moved(face, v, index[id(v)]) == 0 for v in resting)
    assert runner.generator.stream is None                                   # closed with the runner
    # The agent side hears that the segment played whole (AgentSession waits on this).
    assert runner.playback == [("finished", pytest.approx(len(audio) * 0.04), False)]


def test_clear_buffer_returns_to_idle_at_once_and_the_next_utterance_plays(face, speech) -> None:
    """Barge-in (QueueAudioOutput.clear_buffer, as the agent session does it) 10 frames into a 5 s
    utterance: no speech frame and no segment end follow it, the next video frame is the idle loop
    and so are all after it, at 25 fps; the agent hears it was interrupted after what had played;
    a following 1 s utterance plays and ends."""
    runner = Runner(PresenterVideoGenerator(pipeline=face))
    marks: dict[str, int] = {}

    async def script(r: Runner) -> None:
        await r.say(speech)
        await until(lambda: r.count(rtc.AudioFrame) >= 10)
        r.audio.clear_buffer()
        marks["cut"] = len(r.items)
        at = r.count(rtc.VideoFrame)
        await until(lambda: r.count(rtc.VideoFrame) >= at + 15)
        marks["next"] = len(r.items)
        await r.say(speech[:TTS_RATE])
        await until(lambda: r.count(AudioSegmentEnd) == 1)

    asyncio.run(runner.run(script))
    items = runner.items
    index = video_index(items)
    before, after, nxt = items[:marks["cut"]], items[marks["cut"]:marks["next"]], items[marks["next"]:]
    assert 10 <= sum(isinstance(it, rtc.AudioFrame) for it in before) < len(speech) / TTS_RATE * 25 - 10
    assert not any(isinstance(it, (rtc.AudioFrame, AudioSegmentEnd)) for it in after)
    after_videos = [it for it in after if isinstance(it, rtc.VideoFrame)]
    assert len(after_videos) >= 15
    assert all(mouth_moved(face, v, index[id(v)]) == 0 for v in after_videos), \
        [mouth_moved(face, v, index[id(v)]) for v in after_videos]
    spoken_next = sum(isinstance(it, rtc.AudioFrame) for it in nxt)
    assert 24 <= spoken_next <= 28                                           # the next 1 s utterance plays
    assert [type(it) for it in nxt].count(AudioSegmentEnd) == 1
    spoken_before = sum(isinstance(it, rtc.AudioFrame) for it in before)
    assert runner.playback == [("finished", pytest.approx(spoken_before * 0.04), True),    # the agent hears
                               ("finished", pytest.approx(spoken_next * 0.04), False)]     # where it was cut


def test_presenter_avatar_feeds_the_agent_sessions_audio_through_livekits_avatar_runner(face, speech) -> None:
    """PresenterAvatar.start in an AgentSession: the session's audio output becomes a QueueAudioOutput
    read by LiveKit's own AvatarRunner, whose reading loop feeds the speech to our generator (the
    mouth driver is fed). The room is a real rtc.Room that is never connected (no server here), so
    the runner publishes nothing and its video loop waits for the connection; aclose ends it all."""
    from livekit.agents import AgentSession
    from livekit.agents.voice.avatar import AvatarRunner

    from presenter.agents.livekit import PresenterAvatar

    async def main() -> tuple[object, object, float, object]:
        session, avatar = AgentSession(), PresenterAvatar(pipeline=face)
        await avatar.start(session, rtc.Room())
        output, runner = session.output.audio, avatar.runner
        for frame in frames_of(speech[:TTS_RATE]):
            await output.capture_frame(frame)
        output.flush()
        await until(lambda: avatar.generator.stream.stats.driven_s >= 0.5)
        driven_s = avatar.generator.stream.stats.driven_s
        await avatar.aclose()
        return output, runner, driven_s, avatar.generator.stream

    output, runner, driven_s, stream_after = asyncio.run(main())
    assert isinstance(output, QueueAudioOutput) and isinstance(runner, AvatarRunner)
    assert driven_s >= 0.5
    assert stream_after is None
