"""Prometheus metrics: `presenter_` prefix, base units (seconds), `_total` counters, no per-session labels.

Each app owns its registry, so several servers (tests) can live in one process.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from presenter.stream.stream import FRAME_S, StreamChunk, StreamStats

STAGE_BUCKETS = (0.001, 0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.024, 0.04, 0.08, 0.16)
LATENCY_BUCKETS = (0.05, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.25, 0.3, 0.4, 0.6, 1.0, 2.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.sessions = Gauge("presenter_sessions", "Open sessions", ["kind"], registry=r)
        self.sessions_started = Counter("presenter_sessions_started", "Sessions accepted", ["kind"], registry=r)
        self.sessions_ended = Counter("presenter_sessions_ended", "Sessions torn down, by reason",
                                      ["kind", "reason"], registry=r)
        self.rejected = Counter("presenter_requests_rejected", "Requests refused, by reason", ["reason"], registry=r)
        self.frames = Counter("presenter_frames", "Video frames produced by presenter streams", registry=r)
        self.frames_reused = Counter("presenter_frames_reused", "Frames sent again because a render was late",
                                     registry=r)
        self.frames_dropped = Counter("presenter_frames_dropped",
                                      "Frames dropped because a peer's sender fell behind", registry=r)
        self.frames_degraded = Counter("presenter_frames_degraded",
                                       "Frames drawn by the cheaper fallback renderer because renders missed their "
                                       "frames (overload)", registry=r)
        self.poses_late = Counter("presenter_poses_late", "Frames whose mouth pose was not ready (pose held)",
                                  registry=r)
        self.audio_underruns = Counter("presenter_audio_underruns", "Playback ran out of input audio", registry=r)
        self.silence_skipped = Counter("presenter_silence_skipped_seconds",
                                       "Silence skipped to win back delay after a stall (live input)", registry=r)
        self.silence_held = Counter("presenter_silence_held_seconds",
                                    "Silence held back to add delay while poses came late (live input)", registry=r)
        self.extra_delay = Gauge("presenter_extra_delay_seconds",
                                 "Delay added to the audio buffer because poses came late, last reported by a "
                                 "session (0 = the configured buffer)", registry=r)
        self.fps = Gauge("presenter_output_fps", "Video frames per second handed to senders over the last "
                         "second, lowest over sessions (0 without sessions)", registry=r)
        self.stage = Histogram("presenter_stage_seconds", "Time per pipeline step (motion: per audio batch; "
                               "render: per frame)", ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.latency = Histogram("presenter_pipeline_latency_seconds",
                                 "Audio age when sent: push into the stream to leaving it with its frame",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.av_offset = Gauge("presenter_av_offset_seconds",
                               "Mouth-pose time minus audio time of the last speaking frame (0 = in sync)",
                               registry=r)
        for kind in ("presenter", "whip", "viewer", "local"):
            self.sessions.labels(kind).set(0)
        self.fps.set(0)

    def observe_chunk(self, chunk: StreamChunk) -> None:
        self.frames.inc()
        if chunk.reused:
            self.frames_reused.inc()
        if chunk.latency_s is not None:
            self.latency.observe(chunk.latency_s)
        if chunk.pose is not None:
            self.av_offset.set(chunk.av_offset_s)

    def observe_stats(self, before: StreamStats, after: StreamStats) -> None:
        """Count what a stream's cumulative stats gained since `before`."""
        self.poses_late.inc(after.late_poses - before.late_poses)
        self.frames_degraded.inc(after.degraded - before.degraded)
        self.audio_underruns.inc(after.underruns - before.underruns)
        self.silence_skipped.inc((after.skipped_silence - before.skipped_silence) * FRAME_S)
        self.silence_held.inc((after.held_silence - before.held_silence) * FRAME_S)
        self.extra_delay.set(after.extra_delay_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
