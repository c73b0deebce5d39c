"""The live server over real WebRTC on 127.0.0.1: aiortc clients in this process talk to the
aiohttp app exactly as the pages do. Media, signalling and clean-up are checked from the
outside (received frames, HTTP answers, /metrics)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time

import aiohttp
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from presenter.errors import UserError
from presenter.server.app import HUB, MAX_BODY_BYTES, ServerConfig, build_app
from presenter.server.client import Client, Received, WavMicrophone, whip_publish
from presenter.server.inprocess import Running, serving


def mouth_crop(pipeline):
    x0, y0, x1, y1 = pipeline.mouth_box
    return lambda rgb: rgb[y0:y1, x0:x1].astype(np.float32)


def idle_distance(pipeline, crops: list[np.ndarray]) -> np.ndarray:
    """Per received mouth crop: mean absolute difference to the closest idle-loop frame (0..255).
    Small (codec noise) when the idle frame is shown as is; large when the mouth moved."""
    idle = np.stack([mouth_crop(pipeline)(f) for f in pipeline.pack.frames])
    return np.array([np.abs(idle - c).mean(axis=(1, 2, 3)).min() for c in crops])


def phrase_onsets(mic: WavMicrophone, wav, t_end: float) -> list[tuple[float, float]]:
    """(start, end) monotonic times at which the looping microphone sent each phrase, up to t_end."""
    out, k = [], 0
    while True:
        base = mic.start_time + k * wav.duration_s
        for a, b in wav.speech:
            if base + b > t_end:
                return out
            out.append((base + a, base + b))
        k += 1


async def offer_sdp(audio: str | None = "sendrecv", video: str | None = "recvonly") -> str:
    """A real offer from aiortc (with a 127.0.0.1 candidate), for signalling-only tests."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if audio == "sendrecv":
        pc.addTrack(WavMicrophone(np.zeros(4800, np.float32), 48000))
    elif audio:
        pc.addTransceiver("audio", direction=audio)
    if video:
        pc.addTransceiver("video", direction=video)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def post(url: str, *, json_body=None, data=None, headers=None) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as http, http.post(url, json=json_body, data=data, headers=headers) as r:
        return r.status, dict(r.headers), await r.text()


def test_loopback_call_streams_moves_mouth_in_speech_rests_in_silence(baseline_pipeline, speech_wav) -> None:
    """A WAV microphone over WebRTC on 127.0.0.1: video keeps arriving, the mouth moves in
    every phrase and shows the idle frame in silence, voice and mouth arrive together, the
    candidate pair is loopback, and the session is gone after the call. (Frame rate and latency
    on this machine: `presenter bench live`.)"""
    p = baseline_pipeline

    async def main():
        async with serving(p) as srv:
            mic = WavMicrophone(speech_wav.samples, speech_wav.rate)
            async with Client(srv.url, mic, keep=mouth_crop(p)) as c:
                await c.wait_connected(30)
                assert c.selected_pair() == ("127.0.0.1", "127.0.0.1")
                await asyncio.sleep(1.6 * speech_wav.duration_s)
                m = await srv.metrics()
            await asyncio.sleep(0.5)
            m_after = await srv.metrics()
            return mic, c.received, m, m_after

    mic, rec, m, m_after = asyncio.run(main())
    t = np.array(rec.video_t)
    warm = t > t[0] + 1.0                       # VP8's first second ramps its bitrate up
    fps = (warm.sum() - 1) / (t[warm][-1] - t[warm][0])
    assert np.max(np.diff(t[warm])) < 1.0, "the video stalled"
    assert m["presenter_output_fps"] > 0 and m["presenter_frames_total"] >= len(t)
    assert m['presenter_sessions{kind="presenter"}'] == 1
    assert m_after['presenter_sessions{kind="presenter"}'] == 0

    d = idle_distance(p, rec.video)
    phrases = [(a, b) for a, b in phrase_onsets(mic, speech_wav, t[-1] - 0.6) if a > t[0] + 0.5]
    assert len(phrases) >= 4
    quiet = np.ones(len(t), bool)
    for a, b in phrase_onsets(mic, speech_wav, t[-1] + 10):
        quiet &= (t < a) | (t > b + 0.8)       # nothing spoken in the 0.8 s before arrival
    quiet &= warm
    assert quiet.sum() >= 20
    # At rest the distance is VP8's noise (3-4.5; up to ~9 for a few frames while the encoder's quality
    # recovers after a loaded moment); a moving mouth passes 14 (asserted below).
    assert np.mean(d[quiet] < 10) > 0.95, np.round(d[quiet], 1)

    latencies, av = [], []
    audio_t, audio_rms = np.array(rec.audio_t), np.array(rec.audio_rms)
    for a, b in phrases:
        during = (t > a) & (t < b + 0.5)
        assert d[during].max() > 14, f"mouth did not move for the phrase at {a - mic.start_time:.2f} s"
        opened = t[(t > a) & (d > 12)][0]
        heard = audio_t[(audio_t > a) & (audio_rms > 0.01)][0]
        latencies.append(opened - a)
        av.append(opened - heard)
    latencies, av = np.array(latencies), np.array(av)
    print(f"\nloopback: {fps:.2f} fps; mic->frame arrival latency median {1000 * np.median(latencies):.0f} ms, "
          f"max {1000 * latencies.max():.0f} ms; mouth onset - voice onset at arrival "
          f"median {1000 * np.median(av):.0f} ms (range {1000 * av.min():.0f}..{1000 * av.max():.0f})")
    # Voice and lips leave the server together: their onsets arrive close, whatever the load.
    assert abs(np.median(av)) < 0.25


def test_loopback_call_drives_the_default_syncformer_mouth(live_pipeline, speech_wav) -> None:
    """The default engine (the shipped Style-SyncFormer) over a loopback call: speech played once
    moves the mouth and comes back as voice; once the server has played it all, the mouth rests
    (the idle frame). Bounds allow a busy machine any lag; the timing is `presenter bench live`'s."""
    p = live_pipeline
    assert p.engine == "syncformer", "the SyncFormer weights ship: --engine auto must pick them"

    async def main():
        async with serving(p) as srv:
            mic = WavMicrophone(speech_wav.samples, speech_wav.rate, loop=False)
            async with Client(srv.url, mic, keep=mouth_crop(p)) as c:
                await c.wait_connected(30)
                assert c.selected_pair() == ("127.0.0.1", "127.0.0.1")
                session = srv.app[HUB].sessions[c.session_id]
                spoken_until = speech_wav.speech[-1][1]

                def speech_played() -> bool:                 # the last phrase's end has left the server
                    delay = session.stream.stats.latency_s or 0.0
                    return mic.start_time is not None and time.monotonic() > mic.start_time + spoken_until + delay

                await until(speech_played, 60, "the server playing all the speech")
                await asyncio.sleep(1.0)
                n_spoken = len(c.received.video)
                await asyncio.sleep(1.5)
                info = session.stats()
            await asyncio.sleep(0.5)
            return c.received, n_spoken, info, len(srv.app[HUB].sessions)

    rec, n_spoken, info, left = asyncio.run(main())
    d = idle_distance(p, rec.video)
    rest = d[n_spoken:]
    rms = np.array(rec.audio_rms)
    print(f"\nsyncformer call: mouth change from idle, spoken part max {d[:n_spoken].max():.1f}, after it "
          f"median {np.median(rest):.1f}; session {info}")
    assert len(rest) >= 10                                     # video kept coming after the speech
    assert d[:n_spoken].max() > max(7.0, np.median(rest) + 3)  # the mouth moved with the speech
    assert np.median(rest) < 8, np.round(rest, 1)               # and rests once it is over (codec noise aside)
    assert rms.max() > 0.05 and np.median(rms[-20:]) < 0.01    # the voice came back, then silence
    assert left == 0


async def until(condition, timeout_s: float, what: str) -> None:
    """Wait for condition() to hold, checking every 50 ms; a loaded machine gets up to timeout_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


class Viewer:
    """A receive-only viewer (what OBS does): POST /view, the program's frames recorded on arrival."""

    def __init__(self, pipeline) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.seen = Received()
        self.pts: list[int] = []
        self._crop = mouth_crop(pipeline)
        self._tasks: list[asyncio.Task] = []

        @self.pc.on("track")
        def on_track(track) -> None:
            self._tasks.append(asyncio.get_running_loop().create_task(self._record(track)))

    async def _record(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                self.seen.video_t.append(asyncio.get_running_loop().time())
                self.seen.video.append(self._crop(frame.to_ndarray(format="rgb24")))
                self.pts.append(frame.pts)

    async def connect(self, url: str) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        status, _, body = await post(f"{url}/view", json_body=offer)
        assert status == 200, body
        answer = json.loads(body)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    def frames(self) -> int:
        return len(self.seen.video)

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def test_whip_publisher_drives_the_viewer_program(baseline_pipeline, speech_wav) -> None:
    """WHIP ingest: 201 + Location and an SDP answer; a receive-only viewer sees the
    publisher's presenter with the mouth moving; PATCH (trickle ICE) gets 405 + Allow; DELETE
    ends it (then 404), and the viewer
    keeps receiving the idle presenter, its frame numbers rising throughout."""
    p = baseline_pipeline

    async def main():
        async with serving(p) as srv:
            viewer = Viewer(p)
            await viewer.connect(srv.url)
            await until(lambda: viewer.frames() >= 25, 30, "the idle program reaching the viewer")
            n_idle = viewer.frames()

            pub, location = await whip_publish(srv.url, WavMicrophone(speech_wav.samples, speech_wav.rate))
            assert re.fullmatch(r"/whip/[0-9a-f]{32}", location)
            await asyncio.sleep(speech_wav.duration_s + 0.5)
            n_whip = viewer.frames()
            async with aiohttp.ClientSession() as http:
                trickle = {"Content-Type": "application/trickle-ice-sdpfrag"}
                async with http.patch(srv.url + location, data=b"a=ice-ufrag:x\r\n", headers=trickle) as r:
                    patched = r.status, r.headers.get("Allow"), len(srv.app[HUB].sessions)
                async with http.delete(srv.url + location) as r:
                    assert r.status == 200
                async with http.patch(srv.url + location, data=b"", headers=trickle) as r:
                    patched_gone = r.status
                async with http.delete(srv.url + location) as r:
                    assert r.status == 404
            await until(lambda: viewer.frames() >= n_whip + 15, 30, "the idle program after DELETE")
            m = await srv.metrics()
            await pub.close()
            await viewer.close()
            return viewer, n_idle, n_whip, m, patched, patched_gone

    viewer, n_idle, n_whip, m, patched, patched_gone = asyncio.run(main())
    # No trickle ICE or ICE restart: PATCH gets 405 with the allowed method (RFC 9725), the session lives on.
    assert patched == (405, "DELETE", 2) and patched_gone == 404
    d = idle_distance(p, viewer.seen.video)
    assert d[:n_idle].max() < 10                          # the idle program runs before any source
    assert d[n_idle:n_whip].max() > 14                     # the publisher's speech moves the mouth
    assert np.all(np.diff(viewer.pts) > 0)                 # one continuous stream across the change
    assert m['presenter_sessions{kind="whip"}'] == 0
    assert m['presenter_sessions_ended_total{kind="whip",reason="deleted"}'] == 1


def test_program_hands_over_to_the_newest_source_and_back(baseline_pipeline, speech_wav) -> None:
    """The viewer's program shows the newest source: a speaking presenter session, then a silent
    WHIP publisher that joins (mouth at rest), the speaker again when the publisher leaves, and
    the idle presenter when the speaker leaves; frame numbers keep rising through every change."""
    p = baseline_pipeline
    window_s = 3.0                     # any 3 s of the looping speech holds a phrase

    async def main():
        marks = {}
        async with serving(p) as srv:
            viewer = Viewer(p)
            await viewer.connect(srv.url)
            await until(lambda: viewer.frames() >= 10, 30, "the idle program reaching the viewer")
            speaker = Client(srv.url, WavMicrophone(speech_wav.samples, speech_wav.rate))
            await speaker.connect()
            await speaker.wait_connected(30)
            marks["speaker"] = viewer.frames()
            await asyncio.sleep(window_s)
            pub, location = await whip_publish(srv.url, WavMicrophone(np.zeros(48000, np.float32), 48000))
            await asyncio.sleep(1.0)                     # the hand-over and the speaker's last phrase pass
            marks["publisher"] = viewer.frames()
            await asyncio.sleep(window_s)
            async with aiohttp.ClientSession() as http, http.delete(srv.url + location) as r:
                assert r.status == 200
            marks["speaker again"] = viewer.frames()
            await asyncio.sleep(window_s)
            await speaker.close()
            await until(lambda: not srv.app[HUB].count("presenter", "whip"), 10, "the speaker's session ending")
            await asyncio.sleep(1.0)
            marks["idle"] = viewer.frames()
            await until(lambda: viewer.frames() >= marks["idle"] + 25, 30, "the idle program after the speaker")
            marks["end"] = viewer.frames()
            await pub.close()
            await viewer.close()
            return viewer, marks

    viewer, marks = asyncio.run(main())
    d = idle_distance(p, viewer.seen.video)
    stages = list(marks)
    spans = {a: d[marks[a]:marks[b]] for a, b in zip(stages, stages[1:])}
    assert spans["speaker"].max() > 14, "the speaker did not reach the program"
    assert np.mean(spans["publisher"] < 10) > 0.9, "the silent publisher is not on air"
    assert spans["speaker again"].max() > 14, "the program did not go back to the speaker"
    assert spans["idle"].max() < 10, "the program did not go back to the idle presenter"
    assert np.all(np.diff(viewer.pts) > 0)


def test_max_viewers_refuses_with_503_retry_after(baseline_pipeline) -> None:
    """Beyond --max-viewers a new viewer gets 503 with Retry-After, and is counted as refused."""

    async def main():
        async with serving(baseline_pipeline, max_viewers=1) as srv:
            sdp = await offer_sdp(audio="recvonly")
            first = await post(f"{srv.url}/view", json_body={"sdp": sdp, "type": "offer"})
            second = await post(f"{srv.url}/view", json_body={"sdp": sdp, "type": "offer"})
            return first, second, await srv.metrics()

    first, second, m = asyncio.run(main())
    assert first[0] == 200 and json.loads(first[2])["session"]
    assert second[0] == 503 and int(second[1]["Retry-After"]) > 0
    assert m['presenter_sessions{kind="viewer"}'] == 1
    assert m['presenter_requests_rejected_total{reason="busy"}'] == 1


@pytest.mark.parametrize("case", ["garbage", "not-json", "json-list", "answer-type", "no-audio", "recv-only-audio",
                                  "bad-codecs", "no-video", "no-loopback-candidate", "no-fingerprint"])
def test_bad_offers_get_400_and_leave_no_session(baseline_pipeline, case: str) -> None:
    """Malformed or unusable offers are refused with 400 and a message saying what is wrong."""

    async def main():
        good = await offer_sdp()
        bodies = {
            "garbage": {"json_body": {"sdp": "hello world", "type": "offer"}},
            "not-json": {"data": b"{sdp: nope", "headers": {"Content-Type": "application/json"}},
            "json-list": {"json_body": ["offer"]},
            "answer-type": {"json_body": {"sdp": good, "type": "answer"}},
            "no-audio": {"json_body": {"sdp": await offer_sdp(audio=None), "type": "offer"}},
            "recv-only-audio": {"json_body": {"sdp": await offer_sdp(audio="recvonly"), "type": "offer"}},
            "bad-codecs": {"json_body": {"sdp": re.sub(r"(opus|PCMU|PCMA)/", "x-nope/", good), "type": "offer"}},
            "no-video": {"json_body": {"sdp": await offer_sdp(video=None), "type": "offer"}},
            "no-loopback-candidate": {"json_body": {"sdp": good.replace(" 127.0.0.1 ", " 10.9.8.7 "), "type": "offer"}},
            "no-fingerprint": {"json_body": {"sdp": re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", good), "type": "offer"}},
        }
        async with serving(baseline_pipeline) as srv:
            status, _, text = await post(f"{srv.url}/offer", **bodies[case])
            m = await srv.metrics()
            return status, text, m, len(srv.app[HUB].sessions)

    status, text, m, open_sessions = asyncio.run(main())
    assert status == 400, text
    assert len(json.loads(text)["error"]) > 10
    assert open_sessions == 0 and m['presenter_sessions{kind="presenter"}'] == 0
    assert m['presenter_requests_rejected_total{reason="bad_request"}'] == 1


def test_oversized_body_unknown_session_and_wrong_content_type(baseline_pipeline) -> None:
    """413 for a body over the limit, 404 for an unknown session, 415 for WHIP without application/sdp."""

    async def main():
        async with serving(baseline_pipeline) as srv:
            big = await post(f"{srv.url}/offer", data=b"x" * (MAX_BODY_BYTES + 1),
                             headers={"Content-Type": "application/json"})
            async with aiohttp.ClientSession() as http:
                async with http.delete(f"{srv.url}/session/{'0' * 32}") as r:
                    unknown = r.status
                async with http.delete(f"{srv.url}/whip/nope") as r:
                    unknown_whip = r.status
            whip = await post(f"{srv.url}/whip", data=b"v=0", headers={"Content-Type": "text/plain"})
            return big, unknown, unknown_whip, whip, await srv.metrics()

    big, unknown, unknown_whip, whip, m = asyncio.run(main())
    assert big[0] == 413
    assert unknown == 404 and unknown_whip == 404
    assert whip[0] == 415
    assert m['presenter_requests_rejected_total{reason="too_large"}'] == 1
    assert m['presenter_sessions{kind="presenter"}'] == 0


def test_max_sessions_refuses_with_503_retry_after_and_frees_on_delete(baseline_pipeline) -> None:
    """Beyond --max-sessions a new session gets 503 with Retry-After; ending one frees the place.
    (The session's stats and barge-in endpoints answer while it is open.)"""

    async def main():
        async with serving(baseline_pipeline, max_sessions=1, reclaim_grace_s=60) as srv:
            sdp = await offer_sdp()
            first = await post(f"{srv.url}/offer", json_body={"sdp": sdp, "type": "offer"})
            second = await post(f"{srv.url}/offer", json_body={"sdp": sdp, "type": "offer"})
            session = json.loads(first[2])["session"]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{srv.url}/session/{session}") as r:
                    assert r.status == 200 and (await r.json())["kind"] == "presenter"
                async with http.post(f"{srv.url}/session/{session}/interrupt") as r:
                    assert r.status == 200
                async with http.delete(f"{srv.url}/session/{session}") as r:
                    deleted = r.status
            third = await post(f"{srv.url}/offer", json_body={"sdp": sdp, "type": "offer"})
            return first, second, deleted, third, await srv.metrics()

    first, second, deleted, third, m = asyncio.run(main())
    assert first[0] == 200 and third[0] == 200 and deleted == 200
    assert second[0] == 503 and int(second[1]["Retry-After"]) > 0
    assert m['presenter_requests_rejected_total{reason="busy"}'] == 1


def test_reconnect_storm_reclaims_never_connected_places_and_spares_connected_ones(baseline_pipeline) -> None:
    """A page reloaded again and again: offers whose peers never connect fill the places, yet each
    new offer after the grace gets one (the oldest unconnected session is reclaimed), a real
    client still gets in, and a connected session is never evicted: with every place held by a
    connected peer, a newcomer is refused."""
    grace_s = 0.4

    async def main():
        async with serving(baseline_pipeline, max_sessions=2, reclaim_grace_s=grace_s) as srv:
            mic = WavMicrophone(np.zeros(4800, np.float32), 48000)
            async with Client(srv.url, mic) as first:
                await first.wait_connected(30)
                storm = []
                for _ in range(8):                        # the page reloads; its peers never connect
                    await asyncio.sleep(grace_s + 0.1)
                    status, _, body = await post(f"{srv.url}/offer", json_body={"sdp": await offer_sdp(),
                                                                               "type": "offer"})
                    storm.append(status)
                await asyncio.sleep(grace_s + 0.1)
                async with Client(srv.url, WavMicrophone(np.zeros(4800, np.float32), 48000)) as second:
                    await second.wait_connected(30)
                    await asyncio.sleep(grace_s + 0.1)
                    full = await post(f"{srv.url}/offer", json_body={"sdp": await offer_sdp(), "type": "offer"})
                    ids = set(srv.app[HUB].sessions)
                    alive = (first.session_id in ids, second.session_id in ids)
                    m = await srv.metrics()
            return storm, full, alive, m

    storm, full, alive, m = asyncio.run(main())
    assert storm == [200] * 8, storm
    assert alive == (True, True)
    assert full[0] == 503 and int(full[1]["Retry-After"]) > 0
    assert m['presenter_sessions_ended_total{kind="presenter",reason="reclaimed"}'] == 8
    assert m['presenter_requests_rejected_total{reason="busy"}'] == 1


def test_audio_jitter_buffer_is_shortened_on_the_pinned_aiortc() -> None:
    """aiortc is pinned to the version whose private receive jitter buffer we replace, and on it
    the replacement takes: one packet of prefetch instead of four (60 ms less latency)."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    from aiortc.jitterbuffer import JitterBuffer

    from presenter.server.sessions import (AUDIO_JITTER_CAPACITY, AUDIO_JITTER_PREFETCH, JITTER_BUFFER_ATTR,
                                           shorten_audio_jitter_buffer)

    serve = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    pin = next(r for r in serve["project"]["optional-dependencies"]["serve"] if r.startswith("aiortc"))
    assert pin == f"aiortc=={importlib.metadata.version('aiortc')}", pin

    async def main():
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        receiver = pc.addTransceiver("audio", direction="recvonly").receiver
        before = getattr(receiver, JITTER_BUFFER_ATTR)
        applied = shorten_audio_jitter_buffer(receiver)
        after = getattr(receiver, JITTER_BUFFER_ATTR)
        await pc.close()
        return before, applied, after

    before, applied, after = asyncio.run(main())
    assert isinstance(before, JitterBuffer) and before._prefetch == 4       # aiortc's default: 80 ms held
    assert applied and isinstance(after, JitterBuffer)
    assert after.capacity == AUDIO_JITTER_CAPACITY and after._prefetch == AUDIO_JITTER_PREFETCH


def test_unconnected_session_is_closed_after_the_connect_timeout(baseline_pipeline) -> None:
    """A client that takes the answer but never connects is closed after connect_timeout_s."""

    async def main():
        async with serving(baseline_pipeline, connect_timeout_s=0.5) as srv:
            status, _, _ = await post(f"{srv.url}/offer", json_body={"sdp": await offer_sdp(), "type": "offer"})
            opened = len(srv.app[HUB].sessions)
            await until(lambda: not srv.app[HUB].sessions, 15, "the unconnected session ending")
            return status, opened, len(srv.app[HUB].sessions), await srv.metrics()

    status, opened, left, m = asyncio.run(main())
    assert status == 200 and opened == 1 and left == 0
    assert m['presenter_sessions_ended_total{kind="presenter",reason="timeout"}'] == 1


def test_fifty_connects_and_disconnects_leak_nothing(baseline_pipeline) -> None:
    """50 full calls (ICE + DTLS + media), ended alternately by DELETE and by the client closing
    its connection: every session is torn down, counted, and its tasks are gone."""

    async def one(srv: Running, i: int) -> None:
        c = Client(srv.url, WavMicrophone(np.zeros(4800, np.float32), 48000))
        await c.connect()
        await c.wait_connected(30)
        if i % 2:
            async with aiohttp.ClientSession() as http, http.delete(f"{srv.url}/session/{c.session_id}") as r:
                assert r.status == 200
        await c.close()

    async def main():
        async with serving(baseline_pipeline, max_sessions=5) as srv:
            tasks_before = len(asyncio.all_tasks())
            for batch in range(10):
                await asyncio.gather(*(one(srv, 5 * batch + k) for k in range(5)))
                # the closed peers' state changes land (a busy machine takes its time)
                await until(lambda: not srv.app[HUB].sessions, 30, f"batch {batch}'s sessions ending")
            await asyncio.sleep(0.5)
            return len(srv.app[HUB].sessions), len(asyncio.all_tasks()) - tasks_before, await srv.metrics()

    open_sessions, extra_tasks, m = asyncio.run(main())
    assert open_sessions == 0
    assert extra_tasks <= 0, f"{extra_tasks} tasks left behind"
    assert m['presenter_sessions{kind="presenter"}'] == 0
    assert m['presenter_sessions_started_total{kind="presenter"}'] == 50
    ended = sum(v for k, v in m.items() if k.startswith("presenter_sessions_ended_total"))
    assert ended == 50
    assert m['presenter_sessions_ended_total{kind="presenter",reason="deleted"}'] == 25


def test_token_is_required_off_loopback(baseline_pipeline) -> None:
    """Bound off loopback the server needs a token; signalling and metrics refuse requests
    without it (401) while the pages and /healthz stay open."""
    with pytest.raises(UserError, match="token"):
        build_app(ServerConfig(host="0.0.0.0"))

    async def main():
        async with serving(baseline_pipeline, host="0.0.0.0", token="s3cret") as srv:
            async with aiohttp.ClientSession() as http:
                statuses = {}
                for path in ("/", "/viewer", "/healthz", "/web/presenter.js", "/metrics"):
                    async with http.get(srv.url + path) as r:
                        statuses[path] = r.status
                async with http.get(srv.url + "/metrics", headers={"Authorization": "Bearer s3cret"}) as r:
                    statuses["/metrics+token"] = r.status
            statuses["/offer"] = (await post(f"{srv.url}/offer", json_body={"sdp": "v=0", "type": "offer"}))[0]
            statuses["/offer+wrong"] = (await post(f"{srv.url}/offer?token=nope", json_body={}))[0]
            statuses["/offer+token"] = (await post(f"{srv.url}/offer", json_body={"sdp": "v=0", "type": "offer"},
                                                   headers={"Authorization": "Bearer s3cret"}))[0]
            return statuses

    s = asyncio.run(main())
    assert s["/"] == s["/viewer"] == s["/healthz"] == s["/web/presenter.js"] == 200
    assert s["/metrics"] == s["/offer"] == s["/offer+wrong"] == 401
    assert s["/metrics+token"] == 200
    assert s["/offer+token"] == 400                         # past the token, the offer itself is bad


def test_shutdown_closes_every_session(baseline_pipeline) -> None:
    """Stopping the server ends all calls: the clients see their connections close."""

    async def main():
        async with contextlib.AsyncExitStack() as stack:
            srv = await stack.enter_async_context(serving(baseline_pipeline))
            clients = [Client(srv.url, WavMicrophone(np.zeros(4800, np.float32), 48000)) for _ in range(2)]
            for c in clients:
                await c.connect()
                await c.wait_connected(30)
            metrics = srv.app[HUB].metrics
        with contextlib.suppress(AssertionError):        # the states are asserted below
            await until(lambda: all(c.pc.connectionState == "closed" for c in clients), 15, "clients closed")
        states = [c.pc.connectionState for c in clients]
        for c in clients:
            await c.close()
        return states, metrics.sessions_ended.labels("presenter", "shutdown")._value.get()

    states, ended = asyncio.run(main())
    assert ended == 2
    assert states == ["closed", "closed"]


VANISHING_CLIENT = """
import asyncio, sys
import numpy as np
from presenter.server.client import Client, WavMicrophone
from presenter.server.sdp import restrict_ice_to_loopback
restrict_ice_to_loopback()
async def main():
    c = Client(sys.argv[1], WavMicrophone(np.zeros(4800, np.float32), 48000))
    await c.connect()
    await c.wait_connected(30)
    print("connected", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


@pytest.mark.slow
def test_peer_that_vanishes_mid_stream_is_cleaned_up(baseline_pipeline) -> None:
    """A client process killed mid-call (no goodbye) is noticed by ICE consent expiry and its
    session torn down within a minute."""
    import subprocess
    import sys
    import time

    async def main():
        async with serving(baseline_pipeline) as srv:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-c", VANISHING_CLIENT, srv.url,
                                                        stdout=subprocess.PIPE)
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line.strip() == b"connected"
            await asyncio.sleep(1.0)
            assert len(srv.app[HUB].sessions) == 1
            proc.kill()
            await proc.wait()
            t0 = time.monotonic()
            while srv.app[HUB].sessions and time.monotonic() - t0 < 60:
                await asyncio.sleep(0.5)
            return time.monotonic() - t0, len(srv.app[HUB].sessions), await srv.metrics()

    waited, left, m = asyncio.run(main())
    print(f"\nvanished peer cleaned up after {waited:.1f} s")
    assert left == 0
    assert m['presenter_sessions{kind="presenter"}'] == 0
