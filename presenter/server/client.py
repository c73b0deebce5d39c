"""A Python WebRTC client for the server: a WAV file as the microphone, frames recorded on arrival.

Used by the loopback tests and the capacity measurement (`python -m presenter.server.loadtest`):
it speaks to the server exactly as the presenter page does (POST /offer, sendrecv audio,
recvonly video), with aiortc instead of a browser; without a microphone, as the viewer page
(OBS) does (POST /view, receive-only). `whip_publish` is a WHIP publisher (POST /whip).
"""
from __future__ import annotations

import asyncio
import fractions
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from presenter.audio.io import read_wav, resample
from presenter.errors import UserError
from presenter.server.sessions import shorten_audio_jitter_buffer

MIC_RATE = 48000
MIC_FRAME = 960                       # 20 ms, as browsers send


def speech_phrases(texts: tuple[str, ...] = ("Hello there", "Bob and Pam", "Good morning"), *, gap_s: float = 0.9,
                   rate: int = MIC_RATE) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Phrases spoken by espeak-ng, each after gap_s of silence, peak 0.5.

    -> (samples (n,) float32 mono at rate, [(start_s, end_s) of each phrase])."""
    if shutil.which("espeak-ng") is None:
        raise UserError("espeak-ng is not installed (scripts/setup.sh installs it)")
    gap = np.zeros(int(gap_s * rate), np.float32)
    parts, speech, t = [], [], 0.0
    with tempfile.TemporaryDirectory() as d:
        for i, text in enumerate(texts):
            path = f"{d}/p{i}.wav"
            subprocess.run(["espeak-ng", "-w", path, text], check=True, capture_output=True)
            pcm, sr = read_wav(path)
            x = resample(pcm, sr, rate)
            loud = np.flatnonzero(np.abs(x) > 0.01)
            x = x[loud[0]:loud[-1] + 1]
            parts += [gap, 0.5 * x / np.abs(x).max()]
            t += gap_s
            speech.append((t, t + len(x) / rate))
            t += len(x) / rate
    parts.append(gap)
    return np.concatenate(parts), speech


class WavMicrophone(MediaStreamTrack):
    """Audio track playing samples in real time as s16 stereo 48 kHz 20 ms frames (like a browser).

    loop=True repeats the samples; otherwise silence follows them. `start_time` is the
    monotonic time of the first sample, set by the first recv."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, rate: int, *, loop: bool = True) -> None:
        super().__init__()
        self.samples = resample(samples, rate, MIC_RATE)
        self.loop = loop
        self.start_time: float | None = None
        self._i = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start_time is None:
            self.start_time = time.monotonic()
        due = self.start_time + self._i * MIC_FRAME / MIC_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        n = len(self.samples)
        idx = np.arange(self._i * MIC_FRAME, (self._i + 1) * MIC_FRAME)
        chunk = self.samples[idx % n] if self.loop else np.where(idx < n, self.samples[np.minimum(idx, n - 1)], 0)
        s16 = np.clip(np.round(chunk * 32767), -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(s16, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = MIC_RATE
        frame.pts = self._i * MIC_FRAME
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._i += 1
        return frame

    def mic_time(self, t: float) -> float:
        """Position in the samples (s, looped) that the microphone was sending at monotonic time t."""
        return ((t - self.start_time) % (len(self.samples) / MIC_RATE)) if self.start_time else float("nan")


@dataclass
class Received:
    video_t: list[float] = field(default_factory=list)       # monotonic arrival time per video frame
    video: list[np.ndarray] = field(default_factory=list)    # kept frames (RGB) or crops, see keep
    audio_t: list[float] = field(default_factory=list)       # arrival time per audio frame
    audio_rms: list[float] = field(default_factory=list)     # its RMS (full scale 1.0)
    audio: list[np.ndarray] = field(default_factory=list)     # its samples, mono float32 at audio_rate
    audio_rate: int = 48000

    def audio_samples(self) -> np.ndarray:
        """Every received audio sample in arrival order, (n,) float32 mono."""
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)


class Client:
    """One presenter-page-like session. Use `async with Client(url, mic) as c:`."""

    def __init__(self, base_url: str, mic: MediaStreamTrack | None, *,
                 keep: Callable[[np.ndarray], np.ndarray] | None = None, token: str | None = None) -> None:
        """mic: None makes a viewer of the program (POST /view) instead of a presenter session.
        keep: maps each received RGB frame to what is stored (a crop; None stores nothing)."""
        self.base_url = base_url.rstrip("/")
        self.mic = mic
        self.keep = keep
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received = Received()
        self.session_id: str | None = None
        self.connected = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def connect(self) -> None:
        pc = self.pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":       # hold received audio briefly, as a browser's NetEq does
                for t in pc.getTransceivers():
                    if t.receiver.track is track:
                        shorten_audio_jitter_buffer(t.receiver)
            self._tasks.append(asyncio.get_running_loop().create_task(self._record(track)))

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.connected.set()

        if self.mic is None:
            pc.addTransceiver("audio", direction="recvonly")
        else:
            pc.addTrack(self.mic)
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        endpoint = "/view" if self.mic is None else "/offer"
        async with aiohttp.ClientSession(headers=self.headers) as http:
            async with http.post(f"{self.base_url}{endpoint}", json={"sdp": pc.localDescription.sdp,
                                                                      "type": pc.localDescription.type}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"POST {endpoint} -> {r.status}: {body}")
        self.session_id = body.get("session")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))

    async def _record(self, track: MediaStreamTrack) -> None:
        rec = self.received
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "video":
                rec.video_t.append(now)
                if self.keep is not None:
                    rec.video.append(self.keep(frame.to_ndarray(format="rgb24")))
            else:
                a = frame.to_ndarray().astype(np.float32) / 32768.0
                a = a.reshape(-1, len(frame.layout.channels)).mean(axis=1)   # packed s16 -> mono
                rec.audio_t.append(now)
                rec.audio_rms.append(float(np.sqrt(np.mean(a * a))))
                rec.audio.append(a)
                rec.audio_rate = frame.sample_rate

    async def wait_connected(self, timeout_s: float = 15.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    def selected_pair(self) -> tuple[str, str] | None:
        """(local, remote) host of the nominated ICE candidate pair, once connected."""
        for t in self.pc.getTransceivers():
            conn = t.receiver.transport.transport._connection      # aioice.Connection
            for pair in conn._nominated.values():
                return pair.local_candidate.host, pair.remote_candidate.host
        return None

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()


async def whip_publish(base_url: str, mic: MediaStreamTrack, *,
                       token: str | None = None) -> tuple[RTCPeerConnection, str]:
    """A WHIP publisher sending `mic` (POST /whip, application/sdp) -> (its peer connection, the
    session's Location path); DELETE the Location to end it."""
    pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pub.addTransceiver(mic, direction="sendonly")
    await pub.setLocalDescription(await pub.createOffer())
    headers = {"Content-Type": "application/sdp"} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base_url.rstrip('/')}/whip", data=pub.localDescription.sdp,
                                 headers=headers) as r:
                answer, location = await r.text(), r.headers.get("Location")
                if r.status != 201 or not r.headers.get("Content-Type", "").startswith("application/sdp") \
                        or not location:
                    raise RuntimeError(f"POST /whip -> {r.status} (Location {location}): {answer}")
        await pub.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    except BaseException:
        await pub.close()
        raise
    return pub, location
