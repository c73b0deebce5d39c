"""A Pipecat voice bot with presenter as its face, offline, on 127.0.0.1.

    python examples/pipecat_bot.py                     # open http://127.0.0.1:7860/, press Start, talk
    python examples/pipecat_bot.py --self-test 25      # our own WebRTC client speaks a WAV to it, then exits

Pipeline (one per browser connection; Pipecat 1.14, SmallWebRTCTransport over aiortc):

    transport.input()  -> EchoBot        -> EspeakTTSService -> PresenterVideoService -> transport.output()
    (microphone, 16 kHz)  (turns by VAD,    (espeak-ng,          (25 fps face + the       (WebRTC: video +
                          echo or script)    22,050 Hz)           delayed voice)            audio to the page)

EchoBot is the "LLM": it finds the user's turns with WebRTC VAD, hears them with pocketsphinx if it
is installed (the `train` extra) and answers "You said: ...", or reads the next line of a script.
When the user starts talking while the bot speaks, it broadcasts an interruption: the voice and
the mouth stop within a frame (barge-in). Speech in comes from the browser's microphone, or, with
--self-test, from a WAV (default: pocketsphinx's read-speech test data) sent by an aiortc client
as its microphone. ICE gathers only 127.0.0.1 (DESIGN.md section 7): Chromium needs
--allow-loopback-in-peer-connection to reach it.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import logging
import subprocess
import wave
from collections.abc import AsyncGenerator
from pathlib import Path

import numpy as np
import webrtcvad
from aiohttp import web
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline as PipecatPipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner

from presenter.agents.pipecat import PresenterVideoService
from presenter.server.sdp import check_offer, restrict_ice_to_loopback
from presenter.stream.pipeline import Pipeline, load_pipeline

log = logging.getLogger("pipecat_bot")

SPEECH_WAV = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
SCRIPT = ["Hello! I am a presenter running on this computer.",
          "I heard you. Tell me more.",
          "That is interesting. Anything else?"]
IN_RATE = 16000
VAD_FRAME = IN_RATE // 50            # 20 ms
START_FRAMES = 3                     # voiced 20 ms frames in a row that start a user turn
END_FRAMES = 35                      # unvoiced frames in a row (0.7 s) that end it
SELF_TEST_PAUSE_S = 4.0              # the self-test's microphone: the WAV, this much silence, again


class EspeakTTSService(TTSService):
    """espeak-ng as a Pipecat TTS service: one `espeak-ng --stdout` per sentence, 22,050 Hz mono."""

    def __init__(self, *, voice: str = "en-us+f3", **kwargs: object) -> None:
        super().__init__(push_start_frame=True, push_stop_frames=True,
                         settings=TTSSettings(model=None, voice=voice, language=None), **kwargs)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        proc = await asyncio.create_subprocess_exec("espeak-ng", "-v", self._settings.voice, "--stdout", text,
                                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        wav, _ = await proc.communicate()
        with wave.open(io.BytesIO(wav)) as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
        step = rate // 50 * 2                                        # 20 ms of s16
        for i in range(0, len(pcm), step):
            yield TTSAudioRawFrame(pcm[i:i + step], rate, 1, context_id=context_id)


class EchoBot(FrameProcessor):
    """The bot's "LLM": user turns by VAD in, one spoken answer (TTSSpeakFrame) per turn out."""

    def __init__(self) -> None:
        super().__init__()
        self._vad = webrtcvad.Vad(2)
        self._pending = b""
        self._turn: list[bytes] = []
        self._voiced = self._unvoiced = 0
        self._user_speaking = self._bot_speaking = False
        self._lines = 0
        try:
            from pocketsphinx import Decoder
            self._decoder = Decoder(samprate=IN_RATE, loglevel="FATAL")
        except ImportError:
            log.info("pocketsphinx is not installed ('presenter[train]'): the bot reads its script")
            self._decoder = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self._listen(frame)
            return
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        await self.push_frame(frame, direction)

    async def _listen(self, frame: InputAudioRawFrame) -> None:
        self._pending += frame.audio
        while len(self._pending) >= 2 * VAD_FRAME:
            piece, self._pending = self._pending[:2 * VAD_FRAME], self._pending[2 * VAD_FRAME:]
            voiced = self._vad.is_speech(piece, IN_RATE)
            self._voiced, self._unvoiced = (self._voiced + 1, 0) if voiced else (0, self._unvoiced + 1)
            if self._user_speaking:
                self._turn.append(piece)
            if not self._user_speaking and self._voiced >= START_FRAMES:
                self._user_speaking, self._turn = True, [piece]
                if self._bot_speaking:
                    log.info("barge-in: the user talks over the bot")
                    await self.broadcast_interruption()
                await self.push_frame(UserStartedSpeakingFrame())
            elif self._user_speaking and self._unvoiced >= END_FRAMES:
                self._user_speaking = False
                await self.push_frame(UserStoppedSpeakingFrame())
                await self.push_frame(TTSSpeakFrame(await asyncio.to_thread(self._answer, b"".join(self._turn))))

    def _answer(self, pcm: bytes) -> str:
        if self._decoder is None:
            line = SCRIPT[self._lines % len(SCRIPT)]
        else:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            words = self._decoder.hyp().hypstr if self._decoder.hyp() else ""
            line = f"You said: {words}." if words else SCRIPT[self._lines % len(SCRIPT)]
        self._lines += 1
        log.info("bot: %s", line)
        return line


async def run_bot(connection: SmallWebRTCConnection, face: Pipeline) -> None:
    """One session: the pipeline above on one peer connection, until the peer leaves."""
    h, w = face.pack.frames.shape[1:3]
    transport = SmallWebRTCTransport(webrtc_connection=connection, params=TransportParams(
        audio_in_enabled=True, audio_in_sample_rate=IN_RATE,
        audio_out_enabled=True, audio_out_sample_rate=48000,
        video_out_enabled=True, video_out_is_live=False,                 # images ride the audio queue
        video_out_width=w, video_out_height=h, video_out_framerate=25))
    worker = PipelineWorker(PipecatPipeline([transport.input(), EchoBot(), EspeakTTSService(),
                                             PresenterVideoService(pipeline=face), transport.output()]),
                            cancel_on_idle_timeout=False)

    @transport.event_handler("on_client_connected")
    async def on_connected(transport: SmallWebRTCTransport, client: object) -> None:
        await worker.queue_frame(TTSSpeakFrame(SCRIPT[0]))

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(transport: SmallWebRTCTransport, client: object) -> None:
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def make_app(face: Pipeline) -> web.Application:
    app = web.Application()
    bots: set[asyncio.Task] = set()
    app["bots"] = bots

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        try:
            sdp = check_offer(body.get("sdp"), body.get("type"), need_send_audio=True, need_recv_video=True,
                              loopback_only=True)
        except Exception as e:                                        # UserError: a bad offer
            return web.json_response({"error": str(e)}, status=400)
        connection = SmallWebRTCConnection(ice_servers=[])
        await connection.initialize(sdp=sdp, type="offer")
        task = asyncio.get_running_loop().create_task(run_bot(connection, face))
        bots.add(task)
        task.add_done_callback(bots.discard)
        answer = connection.get_answer()
        return web.json_response({**answer, "session": answer["pc_id"]})

    async def on_shutdown(app: web.Application) -> None:
        for task in list(bots):
            task.cancel()
        await asyncio.gather(*bots, return_exceptions=True)

    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    app.on_shutdown.append(on_shutdown)
    return app


async def self_test(url: str, wav: Path, seconds: float) -> None:
    """Our own aiortc client speaks `wav` to the bot, then waits SELF_TEST_PAUSE_S, again and again,
    for `seconds`, and reports what came back."""
    from presenter.audio.io import as_float_mono, read_wav
    from presenter.server.client import Client, WavMicrophone

    pcm, rate = read_wav(wav)
    turn = np.concatenate([as_float_mono(pcm), np.zeros(int(SELF_TEST_PAUSE_S * rate), np.float32)])
    async with Client(url, WavMicrophone(turn, rate, loop=True)) as client:
        await client.wait_connected()
        await asyncio.sleep(seconds)
        rec = client.received
        loud = sum(r > 0.01 for r in rec.audio_rms) * 0.02
        fps = (len(rec.video_t) - 1) / (rec.video_t[-1] - rec.video_t[0]) if len(rec.video_t) > 1 else 0.0
        print(f"self-test: {len(rec.video_t)} video frames ({fps:.1f} fps), "
              f"{len(rec.audio_t) * 0.02:.1f} s of audio, {loud:.1f} s of it voiced; "
              f"ICE pair {client.selected_pair()}")


async def main(args: argparse.Namespace) -> None:
    restrict_ice_to_loopback()
    face = load_pipeline(args.avatar, args.engine, args.renderer)
    runner = web.AppRunner(make_app(face))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    url = f"http://127.0.0.1:{args.port}"
    log.info("bot ready: open %s/ (Chromium: --allow-loopback-in-peer-connection)", url)
    try:
        if args.self_test:
            await self_test(url, Path(args.wav), args.self_test)
        else:
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>presenter + Pipecat</title>
<style>body{font:15px sans-serif;margin:2em}video{width:512px;height:512px;background:#222}</style></head>
<body><h1>presenter + Pipecat</h1>
<p><button id="start">Start</button> <span id="state">idle</span></p>
<video id="face" autoplay playsinline></video>
<p>Talk to the bot; talk over it to interrupt. Everything runs on this machine; the face is synthetic.</p>
<script>
const state = document.getElementById("state");
document.getElementById("start").onclick = async () => {
  const pc = new RTCPeerConnection({iceServers: []});
  const media = new MediaStream();
  document.getElementById("face").srcObject = media;
  pc.ontrack = (e) => media.addTrack(e.track);
  pc.onconnectionstatechange = () => { state.textContent = pc.connectionState; };
  const mic = await navigator.mediaDevices.getUserMedia({audio: true});
  mic.getTracks().forEach((t) => pc.addTrack(t, mic));
  pc.addTransceiver("video", {direction: "recvonly"});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => {
    if (pc.iceGatheringState === "complete") return ok();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && ok();
  });
  const r = await fetch("/offer", {method: "POST", headers: {"Content-Type": "application/json"},
                                    body: JSON.stringify({sdp: pc.localDescription.sdp, type: "offer"})});
  await pc.setRemoteDescription(await r.json());
  window.addEventListener("pagehide", () => pc.close());
};
</script></body></html>
"""


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=7860, help="HTTP port on 127.0.0.1 (default: 7860)")
    ap.add_argument("--avatar", default="default", help="avatar pack: 'default' or a folder (default: default)")
    ap.add_argument("--engine", default="auto", help="mouth driver: auto|syncformer|baseline (default: auto)")
    ap.add_argument("--renderer", default="auto", help="renderer: auto|generator|baseline (default: auto)")
    ap.add_argument("--self-test", type=float, default=0.0, metavar="SECONDS",
                    help="talk to the bot from an aiortc client for SECONDS, print what came back, exit (default: 0, off)")
    ap.add_argument("--wav", default=str(SPEECH_WAV), help=f"the self-test's microphone (default: {SPEECH_WAV})")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(main(ap.parse_args()))
