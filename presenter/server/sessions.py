"""Sessions: one peer connection each, with everything it owns, torn down in one place.

Kinds:
- presenter: the presenter page. Microphone in, presenter video and delayed audio back.
- whip: a WHIP publisher (RFC 9725). Audio in; its presenter goes to the program only.
- viewer: receive-only. Gets the program (OBS Browser Source, the viewer page).

`Hub.end(session, reason)` is the only way a session ends: on `failed` or `closed`, when it is
not connected within `connect_timeout_s`, on DELETE, on a media error, when its place is
reclaimed and at shutdown. It cancels the session's tasks, stops its tracks, closes its stream
and its peer connection, and counts the ending in metrics.

Reconnect storms: a page reloaded again and again leaves sessions whose peers never connect,
each holding a place until its connect timeout. So when a limit is reached, sessions that have
not connected after `reclaim_grace_s` are ended (oldest first, reason "reclaimed") to make
room before a newcomer is refused. A connected session is never reclaimed.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import SessionDescription

from presenter.audio.io import frame_to_pcm
from presenter.errors import UserError
from presenter.server.metrics import Metrics
from presenter.server.program import Program
from presenter.server.sdp import check_offer
from presenter.server.tracks import FeedTrack
from presenter.stream.pipeline import Pipeline
from presenter.stream.stream import PresenterStream, StreamConfig, StreamStats

log = logging.getLogger(__name__)

RETRY_AFTER_S = 10
AUDIO_JITTER_CAPACITY = 16     # received audio packets aiortc may hold for reordering
AUDIO_JITTER_PREFETCH = 1      # packets held before one is released (aiortc's default 4 adds 60 ms)
INGEST_KINDS = ("presenter", "whip")     # sessions that run a presenter stream count against max_sessions


@dataclass(frozen=True)
class HubConfig:
    max_sessions: int = 4           # presenter + WHIP sessions at once; more get 503
    max_viewers: int = 16           # receive-only viewers at once; more get 503
    connect_timeout_s: float = 15.0  # a peer not connected by then is closed
    reclaim_grace_s: float = 2.0    # at a limit, a session not connected after this long gives its place up
    loopback_only: bool = True      # media only over 127.0.0.1 (server bound to loopback)
    buffer_s: float | None = None   # audio delay before playback (None: Pipeline.audio_delay_s)
    id_prefix: str = ""             # put before every session id ("w1-"): a proxy routes /session/<id> by it


class Busy(web.HTTPServiceUnavailable):
    def __init__(self, what: str) -> None:
        super().__init__(text=f"{what}; try again later\n", headers={"Retry-After": str(RETRY_AFTER_S)})


class Session:
    def __init__(self, kind: str, pc: RTCPeerConnection, id_prefix: str = "") -> None:
        self.id = id_prefix + uuid.uuid4().hex
        self.kind = kind
        self.pc = pc
        self.stream: PresenterStream | None = None
        self.video_out: FeedTrack | None = None
        self.audio_out: FeedTrack | None = None
        self.connected = asyncio.Event()
        self.created = time.monotonic()
        self.closed = False
        self._tasks: set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"Session({self.kind} {self.id[:8]})"

    def spawn(self, coro, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self!r} {name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def stats(self) -> dict:
        out: dict = {"id": self.id, "kind": self.kind, "state": self.pc.connectionState}
        if self.stream is not None:
            out.update(dataclasses.asdict(self.stream.stats))
            out["buffer_s"] = self.stream.cfg.buffer_s
        if self.video_out is not None:
            out["fps"] = self.video_out.fps()
        return out


class Hub:
    """All sessions of one server, the program, and the shared worker pool (the pool's owner is the app)."""

    def __init__(self, pipeline: Pipeline, pool: ThreadPoolExecutor, metrics: Metrics,
                 config: HubConfig = HubConfig()) -> None:
        self.pipeline = pipeline
        self.pool = pool
        self.metrics = metrics
        self.cfg = config
        self.sessions: dict[str, Session] = {}
        self.program = Program(lambda: pipeline.stream(pool, on_stage=self._on_stage),
                               on_chunk=metrics.observe_chunk)

    def _on_stage(self, stage: str, seconds: float) -> None:
        self.metrics.stage.labels(stage).observe(seconds)

    def count(self, *kinds: str) -> int:
        return sum(1 for s in self.sessions.values() if s.kind in kinds)

    async def _admit(self, kind: str) -> None:
        """Make room for a `kind` session or raise Busy: at the limit, reclaim a never-connected one."""
        if kind == "viewer":
            kinds, limit = ("viewer",), self.cfg.max_viewers
            full = f"all {limit} viewer places are taken"
        else:
            kinds, limit = INGEST_KINDS, self.cfg.max_sessions
            full = f"the server is at its limit of {limit} sessions"
        if self.count(*kinds) >= limit:
            await self._reclaim(kinds, self.count(*kinds) - limit + 1)
        if self.count(*kinds) >= limit:
            self.metrics.rejected.labels("busy").inc()
            raise Busy(full)

    async def _reclaim(self, kinds: tuple[str, ...], n: int) -> None:
        """End up to n sessions of `kinds` that have not connected within the grace, oldest first."""
        now = time.monotonic()
        stale = sorted((s for s in self.sessions.values() if s.kind in kinds and not s.connected.is_set()
                        and now - s.created >= self.cfg.reclaim_grace_s), key=lambda s: s.created)
        for s in stale[:n]:
            log.info("%r: not connected after %.1f s; its place goes to a newcomer", s, now - s.created)
            await self.end(s, "reclaimed")

    @property
    def buffer_s(self) -> float:
        """The audio delay every session uses."""
        return self.pipeline.audio_delay_s if self.cfg.buffer_s is None else self.cfg.buffer_s

    def new_stream(self) -> PresenterStream:
        return self.pipeline.stream(self.pool, config=StreamConfig(buffer_s=self.buffer_s, live=True),
                                    on_stage=self._on_stage)

    # --- starting --------------------------------------------------------------------------

    async def start(self, kind: str, sdp: object, sdp_type: object = "offer") -> tuple[Session, str]:
        """Check the offer, open the session, answer. -> (session, answer SDP).

        Raises UserError (400) for a bad offer and Busy (503) beyond the limits."""
        sdp = check_offer(sdp, sdp_type, need_send_audio=kind in INGEST_KINDS,
                          need_recv_video=kind in ("presenter", "viewer"), loopback_only=self.cfg.loopback_only)
        await self._admit(kind)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        s = Session(kind, pc, self.cfg.id_prefix)
        self.sessions[s.id] = s
        self.metrics.sessions.labels(kind).inc()
        self.metrics.sessions_started.labels(kind).inc()
        try:
            answer = await self._negotiate(s, sdp)
        except Exception as e:
            await self.end(s, "error")
            if isinstance(e, UserError):
                raise
            log.warning("%r: offer could not be negotiated: %r", s, e)
            raise UserError(f"the offer could not be negotiated: {e}") from None
        log.info("%r: answered; %d sessions open", s, len(self.sessions))
        return s, answer

    async def _negotiate(self, s: Session, sdp: str) -> str:
        pc = s.pc

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            log.debug("%r: connection %s", s, state)
            if state == "connected":
                s.connected.set()
            elif state in ("failed", "closed"):
                await self.end(s, state)

        if s.kind in INGEST_KINDS:
            s.stream = self.new_stream()

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                if track.kind == "audio":
                    for t in pc.getTransceivers():
                        if t.receiver.track is track:
                            shorten_audio_jitter_buffer(t.receiver)
                    s.spawn(self._consume_audio(s, track), "audio in")
                else:
                    s.spawn(_drain(track), f"{track.kind} in (ignored)")

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        # Outgoing tracks go in after the remote description (DESIGN.md section 7), one per
        # kind whose m-line asks to receive.
        wants = {m.rtp.muxId: m.direction in ("sendrecv", "recvonly") for m in SessionDescription.parse(sdp).media}
        for t in pc.getTransceivers():
            if s.kind == "whip" or not wants.get(t.mid, False):
                continue
            track = FeedTrack(t.kind, on_drop=self.metrics.frames_dropped.inc)
            if t.kind == "video":
                s.video_out = s.video_out or track
            else:
                s.audio_out = s.audio_out or track
        for track in (s.audio_out, s.video_out):
            if track is not None:
                pc.addTrack(track)
        await pc.setLocalDescription(await pc.createAnswer())
        if s.kind in INGEST_KINDS:
            s.spawn(self._pump(s), "pump")
            self.program.add_source(s)
        else:
            self.program.subscribe(s, lambda video, audio: _offer_both(s, video, audio))
        s.spawn(self._connect_timeout(s), "connect timeout")
        return pc.localDescription.sdp

    async def _connect_timeout(self, s: Session) -> None:
        try:
            await asyncio.wait_for(s.connected.wait(), self.cfg.connect_timeout_s)
        except asyncio.TimeoutError:
            log.info("%r: not connected after %.0f s; closing", s, self.cfg.connect_timeout_s)
            await self.end(s, "timeout")

    async def _consume_audio(self, s: Session, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pcm, rate = frame_to_pcm(frame)
            try:
                s.stream.push_audio(pcm, rate)
            except UserError as e:
                log.warning("%r: audio refused (%s); ending the session", s, e)
                await self.end(s, "error")
                return

    async def _pump(self, s: Session) -> None:
        """The session's clock: each 40 ms chunk to its own tracks and, when on air, the program."""
        before = StreamStats()
        try:
            async for chunk in s.stream:
                self.metrics.observe_chunk(chunk)
                self.metrics.observe_stats(before, s.stream.stats)
                before = dataclasses.replace(s.stream.stats)
                _offer_both(s, chunk.video, chunk.audio)
                self.program.publish(s, chunk)
        except Exception:
            log.exception("%r: the stream failed; ending the session", s)
            await self.end(s, "error")

    # --- ending ----------------------------------------------------------------------------

    async def end(self, s: Session, reason: str) -> None:
        """Tear the session down completely; safe to call more than once and from its own tasks."""
        if s.closed:
            return
        s.closed = True
        self.sessions.pop(s.id, None)
        self.program.remove_source(s)
        self.program.unsubscribe(s)
        self.metrics.sessions.labels(s.kind).dec()
        self.metrics.sessions_ended.labels(s.kind, reason).inc()
        me = asyncio.current_task()
        tasks = [t for t in s._tasks if t is not me]
        for t in tasks:
            t.cancel()
        for track in (s.video_out, s.audio_out):
            if track is not None:
                track.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        if s.stream is not None:
            await s.stream.close()
        await s.pc.close()
        log.info("%r: ended (%s); %d sessions open", s, reason, len(self.sessions))

    async def close_all(self, reason: str = "shutdown") -> None:
        await asyncio.gather(*(self.end(s, reason) for s in list(self.sessions.values())))
        await self.program.close()


def _offer_both(s: Session, video, audio) -> None:
    if s.video_out is not None:
        s.video_out.offer(video)
    if s.audio_out is not None:
        s.audio_out.offer(audio)


# aiortc has no public setting for the receive jitter buffer: it lives in this private attribute
# of RTCRtpReceiver. aiortc is pinned (==1.16.0) for it, and tests/test_server.py checks both the
# pin and the attribute, so an upgrade fails a test instead of silently adding 60 ms.
JITTER_BUFFER_ATTR = "_RTCRtpReceiver__jitter_buffer"


def shorten_audio_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """aiortc 1.16 holds received audio until 4 newer packets are in (80 ms at 20 ms packets) to
    put reordered packets back in order. The presenter stream buffers audio itself, so hold one
    packet: a packet reordered by more than that is dropped (rare on loopback and LANs), and
    mic-to-screen latency drops by ~60 ms. Call it from the "track" event, before media flows.
    -> True if shortened, False (logged) if this aiortc keeps its buffer elsewhere."""
    if isinstance(getattr(receiver, JITTER_BUFFER_ATTR, None), JitterBuffer):
        setattr(receiver, JITTER_BUFFER_ATTR, JitterBuffer(capacity=AUDIO_JITTER_CAPACITY,
                                                           prefetch=AUDIO_JITTER_PREFETCH))
        return True
    log.warning("aiortc's receiver has no %s: the audio jitter buffer keeps its default (+60 ms)", JITTER_BUFFER_ATTR)
    return False


async def _drain(track: MediaStreamTrack) -> None:
    """Receive and discard a track we do not use (aiortc queues every received frame until read)."""
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
