"""The presenter's voice comes back whole over WebRTC (loopback, aiortc client), to the presenter
page's session and to a viewer of the program (OBS) fed by a WHIP publisher.

Real read speech (pocketsphinx-testdata, never trained on) goes in as the microphone; the audio
that the server sends back is decoded by our aiortc client and compared with what was sent: its
length, its spectrum (log-mel correlation after alignment) and what a speech recogniser hears in
it. With 40 ms audio frames, aiortc stamped two Opus packets with one RTP timestamp and receivers
kept only one: half the voice was lost, and these checks failed (2.7 of 5.5 s arrived, log-mel
correlation undefined, the transcript garbled).
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from presenter.audio.io import read_wav, resample
from presenter.audio.mel import power_mel
from presenter.server.client import Client, Received, WavMicrophone, whip_publish
from presenter.server.inprocess import serving
from presenter.server.tracks import split_audio

SPEECH = "/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav"


def log_mel_match(received: np.ndarray, sent: np.ndarray, rate: int, *, piece_s: float = 1.0) -> float:
    """Median over 1 s pieces of the sent audio of the best Pearson correlation of the piece's
    log-mel spectrogram with any stretch of the received one (10 ms steps). Pieces are matched
    on their own, so silence inserted while the server waited for input (a loaded machine) does
    not count against the audio itself; -1 when less audio came back than was sent."""
    a = np.log10(power_mel(resample(sent, rate, 16000)) + 1e-6)        # (80, T)
    b = np.log10(power_mel(resample(received, rate, 16000)) + 1e-6)
    if b.shape[1] < a.shape[1]:
        return -1.0
    n = int(piece_s * 100)
    best = []
    for p in range(0, a.shape[1] - n + 1, n):
        piece = a[:, p:p + n].ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            r = [np.corrcoef(b[:, k:k + n].ravel(), piece)[0, 1] for k in range(b.shape[1] - n + 1)]
        best.append(float(np.nanmax(np.nan_to_num(r, nan=-1.0))))     # a flat (silent) stretch scores -1
    return float(np.median(best))


def transcribe(samples: np.ndarray, rate: int) -> list[str]:
    """Words pocketsphinx (en-us, its bundled model) hears in the audio."""
    from pocketsphinx import Decoder

    d = Decoder(samprate=16000, loglevel="FATAL")
    s16 = (np.clip(resample(samples, rate, 16000), -1, 1) * 32767).astype(np.int16)
    d.start_utt()
    d.process_raw(s16.tobytes(), full_utt=True)
    d.end_utt()
    return d.hyp().hypstr.split() if d.hyp() else []


def test_audio_frames_are_split_into_20ms_packets_with_their_own_pts() -> None:
    """A 40 ms frame leaves as two 20 ms frames whose pts follow on, samples unchanged."""
    from presenter.stream.frames import audio_frame

    x = np.sin(np.arange(1920) / 7.0).astype(np.float32) * 0.5
    frame = audio_frame(x, 5)
    pieces = split_audio(frame)
    assert [p.samples for p in pieces] == [960, 960]
    assert [p.pts for p in pieces] == [frame.pts, frame.pts + 960]
    np.testing.assert_array_equal(np.concatenate([p.to_ndarray() for p in pieces], axis=1), frame.to_ndarray())


needs_speech = pytest.mark.skipif(not __import__("os").path.exists(SPEECH),
                                  reason="pocketsphinx-testdata is not installed")


def read_speech() -> tuple[np.ndarray, np.ndarray]:
    """-> (the read speech at 48 kHz, the microphone's signal: 0.5 s of silence, the speech, 1 s of silence)."""
    pcm, rate = read_wav(SPEECH)
    speech = resample(pcm, rate, 48000)
    return speech, np.concatenate([np.zeros(24000, np.float32), speech, np.zeros(48000, np.float32)])


def assert_whole(rec: Received, speech: np.ndarray) -> None:
    """All of `speech` came back: as many seconds as the audio's arrival spanned, the same spectrum
    (log-mel r >= 0.9 for each second, aligned on its own) and most of the words the recogniser
    hears in the original."""
    got = rec.audio_samples()
    arrived_s = rec.audio_t[-1] - rec.audio_t[0]
    assert len(got) / rec.audio_rate >= 0.9 * arrived_s, "received audio covers only part of the call"
    assert len(got) >= len(speech)
    assert log_mel_match(got, speech, rec.audio_rate) >= 0.9
    heard, said = transcribe(got, rec.audio_rate), transcribe(speech, 48000)
    common = sum(min(heard.count(w), said.count(w)) for w in set(said))
    assert common >= 0.6 * len(said), (heard, said)


@needs_speech
def test_returned_voice_is_whole_and_intelligible(live_pipeline) -> None:
    """The presenter page's session (POST /offer): all of the sent speech comes back to the caller."""
    speech, sent = read_speech()
    call_s = len(sent) / 48000 + 1.0

    async def main():
        async with serving(live_pipeline) as srv:
            async with Client(srv.url, WavMicrophone(sent, 48000, loop=False)) as c:
                await c.wait_connected()
                await asyncio.sleep(call_s)
                return c.received

    assert_whole(asyncio.run(main()), speech)


@needs_speech
def test_program_voice_reaches_a_viewer_whole_from_a_whip_publisher(baseline_pipeline) -> None:
    """WHIP in, viewer out (POST /view, what OBS does): a publisher's speech comes back whole in the
    program's audio, which shares the presenter session's tracks code but has its own pump (the
    program's). The cheap baseline pipeline: the audio path does not depend on the face."""
    speech, sent = read_speech()

    async def main():
        async with serving(baseline_pipeline) as srv:
            async with Client(srv.url, None) as viewer:
                await viewer.wait_connected()
                pub, location = await whip_publish(srv.url, WavMicrophone(sent, 48000, loop=False))
                try:
                    await asyncio.sleep(len(sent) / 48000 + 1.0)
                finally:
                    await pub.close()
                return viewer.received

    rec = asyncio.run(main())
    assert_whole(rec, speech)
