"""A LiveKit Agents worker with presenter as the agent's face, and an offline self-test.

    python examples/livekit_agent.py --self-test                 # offline: no server, prints latency and CPU
    LIVEKIT_URL=ws://127.0.0.1:7880 LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... \\
        python examples/livekit_agent.py dev                     # the worker (LiveKit's CLI: dev, start, ...)

The worker (livekit-agents 1.8): each job joins its room with an `AgentSession` whose voice is
espeak-ng (a LiveKit TTS, 22,050 Hz) and whose face is presenter (`PresenterAvatar`: an
`AvatarRunner` in the agent's own process, fed through `QueueAudioOutput`, publishing a 25 fps
video track and the delayed voice). It reads a short script; put your STT and LLM into the
`AgentSession` for a conversation. It needs a LiveKit server, which does not run on this machine
(a Go binary, not on PyPI, Debian or npm): the worker mode is not tested here.

--self-test runs what runs without a server: the same generator between LiveKit's
`QueueAudioOutput` and a room-less `AVSynchronizer` (`RoomlessRunner`), real read speech
(pocketsphinx's LibriVox test data) cut into utterances, each entering as 20 ms frames, all at
once (a fast TTS) and then at real-time pace (a streaming TTS), plus one espeak-ng line through
the LiveKit TTS above. It prints the latency presenter adds (first audio frame in -> first frame
with speech out, p50/p95), frames, reused frames and CPU share (process time over wall time).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    Agent,
    AgentServer,
    AgentSession,
    APIConnectOptions,
    JobContext,
    JobProcess,
    cli,
    tts,
    utils,
)
from livekit.agents.voice.avatar import AudioSegmentEnd, QueueAudioOutput

from presenter.agents.livekit import PresenterAvatar, PresenterVideoGenerator, RoomlessRunner
from presenter.audio.io import as_float_mono, read_wav, resample
from presenter.stream.pipeline import Pipeline, load_pipeline

SPEECH_WAV = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
SCRIPT = ["Hello! I am a presenter running on this computer.",
          "My face is drawn on this machine's processor, as I speak."]
TTS_RATE = 24000                      # the self-test's utterances: a common TTS rate
FRAME_S = 0.02                        # 20 ms audio frames in
UTTERANCE_S = 2.5                     # self-test utterance length
ENV = ("PRESENTER_AVATAR", "PRESENTER_ENGINE", "PRESENTER_RENDERER")   # options reach the job processes
LIVEKIT_COMMANDS = ("console", "start", "dev", "connect", "download-files")   # LiveKit's CLI, in livekit-agents 1.8


class EspeakTTS(tts.TTS):
    """espeak-ng as a LiveKit TTS: one `espeak-ng --stdout` per text, 22,050 Hz mono."""

    def __init__(self, *, voice: str = "en-us+f3") -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=22050, num_channels=1)
        self.voice = voice

    def synthesize(self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class _EspeakStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        proc = await asyncio.create_subprocess_exec("espeak-ng", "-v", self._tts.voice, "--stdout", self.input_text,
                                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wav, _ = await proc.communicate()
        with wave.open(io.BytesIO(wav)) as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
        output_emitter.initialize(request_id=utils.shortuuid(), sample_rate=rate, num_channels=1,
                                  mime_type="audio/pcm")
        output_emitter.push(pcm)
        output_emitter.flush()


# --- the worker (needs a LiveKit server) -------------------------------------------------------

def prewarm(proc: JobProcess) -> None:
    """Each job process loads the face once (~1-6 s); its sessions share it."""
    proc.userdata["face"] = load_pipeline(*(os.environ.get(k, d) for k, d in zip(ENV, ("default", "auto", "auto"))))


server = AgentServer(setup_fnc=prewarm, initialize_process_timeout=60)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    session = AgentSession(tts=EspeakTTS())
    avatar = PresenterAvatar(pipeline=ctx.proc.userdata["face"])
    await avatar.start(session, room=ctx.room)                    # before session.start: it takes the audio output
    await session.start(agent=Agent(instructions="Read the script."), room=ctx.room)
    for line in SCRIPT:
        await session.say(line)


# --- the self-test (no server) -----------------------------------------------------------------

def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    ms = 1000 * np.array(seconds)
    return {"p50": round(float(np.percentile(ms, 50)), 1), "p95": round(float(np.percentile(ms, 95)), 1),
            "max": round(float(ms.max()), 1)}


async def self_test(face: Pipeline, args: argparse.Namespace) -> dict:
    """See the module docstring."""
    pcm, rate = read_wav(args.wav)
    speech = resample(as_float_mono(pcm), rate, TTS_RATE)
    n = int(UTTERANCE_S * TTS_RATE)
    utterances = [speech[i:i + n] for i in range(0, len(speech) - n + 1, n)]
    step = int(FRAME_S * TTS_RATE)
    loop = asyncio.get_running_loop()
    want = [0]                                        # utterances said so far
    first_out: list[float] = []                       # loop time of the first speech frame out, per utterance
    ended = asyncio.Event()

    def on_item(item: rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd) -> None:
        if isinstance(item, rtc.AudioFrame) and len(first_out) < want[0]:
            first_out.append(loop.time())
        elif isinstance(item, AudioSegmentEnd):
            ended.set()

    generator = PresenterVideoGenerator(pipeline=face, workers=args.workers)
    out: dict = {"engine": face.engine, "renderer": face.renderer_kind, "workers": args.workers,
                 "speech": str(args.wav), "utterance_s": UTTERANCE_S}
    async with RoomlessRunner(generator, QueueAudioOutput(), on_item=on_item) as runner:
        audio = runner.audio_recv

        async def say(frames: list[rtc.AudioFrame], *, realtime: bool) -> float:
            """One utterance in; -> seconds from its first frame in to its first speech frame out."""
            want[0] += 1
            ended.clear()
            t_in = loop.time()
            for k, frame in enumerate(frames):
                await audio.capture_frame(frame)
                if realtime:
                    await asyncio.sleep(max(0.0, t_in + (k + 1) * frame.duration - loop.time()))
            audio.flush()
            await ended.wait()
            return first_out[-1] - t_in

        await asyncio.sleep(2.0)                                   # let the clock settle
        c0, t0 = cpu_s(), time.monotonic()
        await asyncio.sleep(args.idle_s)
        out["cpu_idle"] = round((cpu_s() - c0) / (time.monotonic() - t0), 3)

        line = await EspeakTTS().synthesize(SCRIPT[0]).collect()  # the worker's voice, through LiveKit's TTS
        out["tts_line_latency_ms"] = round(1000 * await say([line], realtime=False), 1)
        out["tts_line_s"] = round(line.duration, 2)

        for mode in ("burst", "realtime"):
            stats = generator.stream.stats
            frames0, reused0, c0, t0 = stats.frames, stats.reused, cpu_s(), time.monotonic()
            latencies = []
            for i in range(args.utterances):
                s16 = np.round(np.clip(utterances[i % len(utterances)], -1, 1) * 32767).astype(np.int16)
                frames = [rtc.AudioFrame(s16[k:k + step].tobytes(), TTS_RATE, 1, len(s16[k:k + step]))
                          for k in range(0, len(s16), step)]
                latencies.append(await say(frames, realtime=mode == "realtime"))
                await asyncio.sleep(args.gap_s)
            wall_s = time.monotonic() - t0
            out[mode] = {"latency_ms": percentiles_ms(latencies), "cpu_cores": round((cpu_s() - c0) / wall_s, 3),
                         "speech_s": args.utterances * UTTERANCE_S, "wall_s": round(wall_s, 1),
                         "frames": stats.frames - frames0, "reused_frames": stats.reused - reused0,
                         "late_poses_total": stats.late_poses}
        out["av_sync_fps"] = round(runner.av_sync.actual_fps, 2)
    out["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    out["cores"] = os.cpu_count()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        usage="%(prog)s [options] [--self-test | {" + ",".join(LIVEKIT_COMMANDS) + "} ...]",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"A LiveKit command ({', '.join(LIVEKIT_COMMANDS)}) and what follows it go to LiveKit's CLI: "
               "'python examples/livekit_agent.py dev --help'.")
    ap.add_argument("--avatar", default="default", help="avatar pack: 'default' or a folder (default: default)")
    ap.add_argument("--engine", default="auto", help="mouth driver: auto|syncformer|baseline (default: auto)")
    ap.add_argument("--renderer", default="auto", help="renderer: auto|generator|baseline (default: auto)")
    ap.add_argument("--self-test", action="store_true", help="run the generator offline on real speech, print "
                    "latency and CPU, exit (default: off)")
    ap.add_argument("--wav", default=str(SPEECH_WAV), help=f"the self-test's speech (default: {SPEECH_WAV})")
    ap.add_argument("--utterances", type=int, default=8, help="self-test utterances per mode (default: 8)")
    ap.add_argument("--gap-s", type=float, default=0.8, help="self-test silence between utterances, s (default: 0.8)")
    ap.add_argument("--idle-s", type=float, default=5.0, help="self-test idle time measured first, s (default: 5)")
    ap.add_argument("--workers", type=int, default=2, help="worker threads per session (default: 2)")
    ap.add_argument("--json", help="self-test: also write the results to this file")
    argv = sys.argv[1:]
    cut = next((i for i, a in enumerate(argv) if a in LIVEKIT_COMMANDS), len(argv))
    args = ap.parse_args(argv[:cut])
    if args.self_test:
        face = load_pipeline(args.avatar, args.engine, args.renderer)
        text = json.dumps(asyncio.run(self_test(face, args)), indent=2)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        return
    os.environ.update(zip(ENV, (args.avatar, args.engine, args.renderer)))
    if cut == len(argv):
        ap.error(f"say --self-test or a LiveKit command: {', '.join(LIVEKIT_COMMANDS)}")
    sys.argv = [sys.argv[0], *argv[cut:]]
    cli.run_app(server)


if __name__ == "__main__":
    main()
