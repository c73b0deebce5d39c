"""A recorded live call judged by phonetics: real read speech into the server over WebRTC, the
returned face and voice recorded by our aiortc client, scored with the 7b judge.

    python -m presenter.offline.live_call --engine auto --avatar default --utterances 10 --json call.json

What happens:
1. The server app runs in this process on 127.0.0.1 (`presenter.server.inprocess.serving`).
2. Our aiortc client (`presenter.server.client`) sends pocketsphinx's test utterances (held-out
   read speech, `real_validation_set`), each followed by `gap_s` of silence, in real time, and
   keeps each returned video frame (cropped to the face) and audio frame with its arrival time
   and its RTP-derived pts.
3. Clocks. Both returned tracks leave the server from one 25 fps clock (video frame k and its
   40 ms of audio are offered together), so their arrival times are comparable. aiortc releases
   a received frame only when a packet of the next one arrives, so an item's arrival is taken
   as the release of the item before it (`_clock`). Video frame k (pts / 3600) is placed at
   v0 + k / 25 and returned audio sample s at a0 + s / rate, v0 and a0 the medians of
   (arrival - pts time) over the call: jitter and lost frames do not move the clock. (Frames
   at their release time and audio at release minus duration would put the video ~40 ms later;
   the report gives that difference as clock.literal_rule_video_later_s.)
4. The phones come from forced alignment of each utterance's known transcript on the *sent*
   audio; they are placed where the *returned* audio plays them, found by matching the sent
   audio to the returned one frame by frame (10 ms log-mels, a monotonic warp): the delay moves
   in 20-40 ms steps during a call, and a stream that falls behind returns speech with gaps.
5. Mouth openings of the received frames (IMAGE-mode landmarks) -> `phonetic_scores`.

Also reported: frames received per second, video frames missing (pts gaps), and the returned
audio's duration against the call's.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from presenter.errors import UserError
from presenter.offline.judge import format_table, mouth_openings, phonetic_scores

if TYPE_CHECKING:
    from collections.abc import Callable

    import av
    from aiortc.mediastreams import MediaStreamTrack

    from presenter.data.align_real import RealClip
    from presenter.server.client import Client
    from presenter.stream.pipeline import Pipeline


FPS = 25
SENT_RATE = 16000             # the test utterances' rate
LEAD_S = 1.0                  # silence before the first utterance (the session warms up)
MAX_LAG_S = 3.0               # returned audio may come back up to this much later than sent
MARGIN_S = 0.2                # each utterance is matched with this much of its silence either side
MAX_JUMP_S = 0.4              # the returned voice may insert up to this much silence at once
JUMP_COST = 0.02              # match cost per 10 ms of step away from real time (cost: RMS log-mel difference / 10 dB)
GAP_FRAMES = 3                # a gap counts when >= this many 10 ms frames are inserted or dropped at once
MISMATCH_MAX_DB = 4.0         # matched returned/sent log-mels differ by less (RMS) when the voice came back whole
                              # (2.2-2.7 dB measured through the loudness baseline; a chopped voice 5-9 dB)
FLOOR_DB = 60.0               # log-mels floored this far below the signal's loud level
SERVER_COUNTERS = ("presenter_frames", "presenter_poses_late", "presenter_audio_underruns",
                   "presenter_silence_skipped", "presenter_av_offset")   # /metrics kept in the report
FACE_PAD = 0.5                # crop: the idle loop's face box widened by this share of its size per side


@dataclass(frozen=True)
class Options:
    engine: str = "auto"
    avatar: str = "default"
    utterances: int = 10
    gap_s: float = 1.0


@dataclass(frozen=True)
class Utterance:
    name: str
    start_s: float                              # where it starts in the sent audio
    duration_s: float
    phones: list[tuple[str, float, float]]      # aligned on the utterance, seconds from its start


def call_audio(clips: list[RealClip], gap_s: float) -> tuple[np.ndarray, list[Utterance]]:
    """Test utterances (`RealClip`s) -> what the microphone sends at 16 kHz: LEAD_S of silence,
    then each clip followed by gap_s of silence; and where each utterance lies in it."""
    parts, utts, t = [np.zeros(int(LEAD_S * SENT_RATE), np.float32)], [], LEAD_S
    for c in clips:
        utts.append(Utterance(c.name, t, len(c.audio) / SENT_RATE, c.phones))
        parts += [c.audio.astype(np.float32), np.zeros(int(gap_s * SENT_RATE), np.float32)]
        t += len(c.audio) / SENT_RATE + gap_s
    return np.concatenate(parts), utts


def face_box(pipeline: Pipeline) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) frame pixels: the face over the whole idle loop, widened by FACE_PAD per
    side so the landmarker's detector sees the head in context (a tight crop moves its landmarks)."""
    verts = pipeline.pack.face["verts_px"][..., :2]                 # (N, 468, 2)
    (x0, y0), (x1, y1) = verts.min(axis=(0, 1)), verts.max(axis=(0, 1))
    h, w = pipeline.pack.frames.shape[1:3]
    px, py = FACE_PAD * (x1 - x0), FACE_PAD * (y1 - y0)
    return max(0, int(x0 - px)), max(0, int(y0 - py)), min(w, int(x1 + px) + 1), min(h, int(y1 + py) + 1)


class _PtsTap:
    """A received track whose frames' pts (seconds) are appended to `pts` as they are read."""

    def __init__(self, track: MediaStreamTrack, pts: list[float]) -> None:
        self.track, self.kind, self.pts = track, track.kind, pts

    async def recv(self) -> av.frame.Frame:
        frame = await self.track.recv()
        self.pts.append(float(frame.pts * frame.time_base) if frame.pts is not None else math.nan)
        return frame


def _recording_client(base_url: str, mic: MediaStreamTrack, keep: Callable[[np.ndarray], np.ndarray]) -> Client:
    """Our test client, also keeping each received frame's pts in `video_pts` / `audio_pts`
    (seconds, rebased by aiortc to the track's first RTP timestamp), index-aligned with
    `received.video_t` / `audio_t`. (Built here: the client needs the serve extra.)"""
    from presenter.server.client import Client

    class RecordingClient(Client):
        def __init__(self) -> None:
            super().__init__(base_url, mic, keep=keep)
            self.video_pts: list[float] = []
            self.audio_pts: list[float] = []

        async def _record(self, track: MediaStreamTrack) -> None:
            await super()._record(_PtsTap(track, self.video_pts if track.kind == "video" else self.audio_pts))

    return RecordingClient()


async def record_call(pipeline: Pipeline, samples: np.ndarray, *, tail_s: float) -> tuple[Client, float, dict]:
    """Send samples (16 kHz) through a loopback call -> (the client, monotonic time of the first
    sent sample, the server's counters after the call); the call lasts the samples plus tail_s."""
    from presenter.server.client import WavMicrophone
    from presenter.server.inprocess import serving

    x0, y0, x1, y1 = face_box(pipeline)
    async with serving(pipeline, avatar=str(pipeline.pack.root), engine=pipeline.engine) as srv:
        mic = WavMicrophone(samples, SENT_RATE, loop=False)
        client = _recording_client(srv.url, mic, lambda rgb: rgb[y0:y1, x0:x1].copy())
        async with client:
            await client.wait_connected(30)
            await asyncio.sleep(len(samples) / SENT_RATE + tail_s)
        counters = {k: v for k, v in (await srv.metrics()).items()
                    if k.startswith(SERVER_COUNTERS) and "_bucket" not in k and "_created" not in k}
    return client, mic.start_time, counters


@dataclass
class Timeline:
    frames: list[np.ndarray | None]     # received face crops by server frame index (None: missing)
    v0: float                           # monotonic time of server video frame 0
    a0: float                           # monotonic time at which returned audio sample 0 plays
    returned: np.ndarray                # returned audio by pts, mono float32
    rate: int
    literal_video_late_s: float         # how much later video would sit with frames at their release
                                        # time and audio frames at release minus duration


def _clock(release_t: list[float], pts_s: list[float], step_s: float) -> float:
    """Monotonic time of pts 0 on the arrival clock. aiortc releases a received frame only when a
    packet of the next one arrives (its jitter buffer sees a frame complete at a newer timestamp;
    video: one frame, ~47 ms, after sending; audio with the client's one-packet prefetch: 4 or
    45 ms), so an item's arrival is the release of the item before it: the median of
    (release[i-1] - pts[i]) over consecutive items (pts step_s apart) is robust to jitter and gaps."""
    t, q = np.asarray(release_t), np.asarray(pts_s)
    consecutive = np.abs(np.diff(q) - step_s) < 0.25 * step_s
    if not consecutive.any():
        raise RuntimeError("no two consecutive frames were received")
    return float(np.median(t[:-1][consecutive] - q[1:][consecutive]))


def _timeline(client: Client) -> Timeline:
    rec = client.received
    nv, na = min(len(rec.video_t), len(client.video_pts)), min(len(rec.audio_t), len(client.audio_pts))
    if nv < 2 or na < 2:
        raise RuntimeError(f"the call returned {nv} video and {na} audio frames")
    vk = np.round(np.asarray(client.video_pts[:nv]) * FPS).astype(int)                # server frame index
    frames: list[np.ndarray | None] = [None] * (int(vk.max()) + 1)
    for k, f in zip(vk, rec.video[:nv]):
        frames[k] = f
    rate = rec.audio_rate
    starts = np.round(np.asarray(client.audio_pts[:na]) * rate).astype(int)
    lens = np.array([len(a) for a in rec.audio[:na]])
    returned = np.zeros(int((starts + lens).max()), np.float32)
    for s, a in zip(starts, rec.audio[:na]):
        returned[s:s + len(a)] = a
    v0 = _clock(rec.video_t[:nv], client.video_pts[:nv], 1 / FPS)
    a0 = _clock(rec.audio_t[:na], client.audio_pts[:na], len(rec.audio[0]) / rate)
    v_lit = float(np.median(np.asarray(rec.video_t[:nv]) - vk / FPS))
    a_lit = float(np.median(np.asarray(rec.audio_t[:na]) - (starts + lens) / rate))
    return Timeline(frames, v0, a0, returned, rate, (v_lit - a_lit) - (v0 - a0))


def _log_mel(x: np.ndarray) -> np.ndarray:
    """16 kHz audio -> log-mel frames (T, 80) every 10 ms, relative to the signal's loud level
    and floored 60 dB below it (so a codec's silence and a microphone's hiss both read as floor)."""
    from presenter.audio.mel import power_mel

    db = 10 * np.log10(power_mel(x).T + 1e-10)
    loud = np.percentile(db, 99) if db.size else 0.0
    return np.maximum(db - loud, -FLOOR_DB) / 10.0


def warp(cost: np.ndarray, max_jump: int, jump_cost: float) -> np.ndarray:
    """Cost (I, J) -> the returned frame j(i) (I,) matched to each sent frame i: monotonic, each
    step advancing 0..max_jump frames (0: returned audio dropped sent audio; > 1: it inserted
    some), minimising the summed cost plus jump_cost per frame of step away from 1; free start
    and end. One row at a time: O(I * J * max_jump)."""
    I, J = cost.shape
    total = cost[0].copy()
    back = np.zeros((I, J), np.int16)                   # the step taken into (i, j)
    penalty = jump_cost * np.abs(np.arange(max_jump + 1) - 1)
    for i in range(1, I):
        best = np.full(J, np.inf)
        for d in range(max_jump + 1):
            cand = np.full(J, np.inf)
            cand[d:] = total[:J - d] + penalty[d]
            take = cand < best
            best[take] = cand[take]
            back[i, take] = d
        total = cost[i] + best
    path = np.empty(I, int)
    path[-1] = int(np.argmin(total))
    for i in range(I - 1, 0, -1):
        path[i - 1] = path[i] - back[i, path[i]]
    return path


def _long_runs(flags: np.ndarray, min_len: int) -> int:
    """How many True entries lie in runs of at least min_len."""
    n, run = 0, 0
    for f in list(flags) + [False]:
        if f:
            run += 1
        else:
            n, run = n + (run if run >= min_len else 0), 0
    return n


def place_phones(tl: Timeline, sent: np.ndarray, sent_start: float, utts: list[Utterance]) -> tuple[
        list[tuple[str, float, float]], dict]:
    """Phones of every utterance on the video clock (seconds after server frame 0), each where the
    returned audio plays it; -> (phones, report on the returned voice's delay and continuity).

    The returned voice is not the sent one delayed by a constant: the live stream moves the delay
    in 20-40 ms steps, and a stream that cannot keep up plays speech with gaps in between. So
    each utterance is matched frame by frame (10 ms log-mels, `warp`) against the returned audio
    from where it was sent to MAX_LAG_S later, and each phone edge is taken through that match."""
    from presenter.audio.io import resample

    hop = 0.01
    got = _log_mel(resample(tl.returned, tl.rate, SENT_RATE))
    mel_sent = _log_mel(sent)
    base = round((sent_start - tl.a0) / hop)           # returned frame = sent frame + base: no delay
    phones, lags, inserted, dropped, mismatch = [], [], [], [], []
    for u in utts:
        i0 = max(0, round((u.start_s - MARGIN_S) / hop))
        i1 = min(len(mel_sent), round((u.start_s + u.duration_s + MARGIN_S) / hop))
        j0 = max(0, i0 + base)
        j1 = min(len(got), i1 + base + round(MAX_LAG_S / hop))
        if j1 - j0 < i1 - i0:
            raise RuntimeError(f"{u.name}: the returned audio ends before this utterance came back")
        a, b = mel_sent[i0:i1], got[j0:j1]
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
        cost = np.sqrt(np.maximum(sq, 0) / a.shape[1])                               # (I, J) RMS difference
        path = warp(cost, round(MAX_JUMP_S / hop), JUMP_COST) + j0
        steps = np.diff(path)                            # 1: real time; the match wiggles by a frame
        inserted.append(float(np.where(steps > GAP_FRAMES, steps - 1, 0).sum() * hop))
        dropped.append(float(_long_runs(steps == 0, GAP_FRAMES) * hop))
        mismatch.append(10 * float(cost[np.arange(len(path)), path - j0].mean()))      # dB

        def at(t: float) -> float:
            """Utterance time -> video-clock time where the returned audio plays it."""
            i = (u.start_s + t) / hop - i0
            j = np.interp(i, np.arange(len(path)), path)
            return j * hop + tl.a0 - tl.v0

        for p, s, e in u.phones:
            phones.append((p, at(s), at(e)))
            if p != "sil":
                lags.append(at(s) + tl.v0 - tl.a0 - (u.start_s + s) - (sent_start - tl.a0))
    d = np.asarray(lags)
    return phones, {
        "returned_after_sent_s": {"median": round(float(np.median(d)), 4), "min": round(float(d.min()), 4),
                                  "max": round(float(d.max()), 4)},
        "inserted_s": round(sum(inserted), 3), "dropped_s": round(sum(dropped), 3),
        "mismatch_db": round(float(np.mean(mismatch)), 2), "placed_reliably": bool(np.mean(mismatch) <= MISMATCH_MAX_DB),
        "per_utterance": [{"name": u.name, "inserted_s": round(x, 3), "dropped_s": round(y, 3),
                           "mismatch_db": round(z, 2)} for u, x, y, z in zip(utts, inserted, dropped, mismatch)]}


def measure(opts: Options, *, pipeline: Pipeline | None = None, clips: list[RealClip] | None = None) -> dict:
    """Run one recorded call and judge it -> the report (also what --json writes). A command's
    body: it runs its own event loop (the server's and the client's). pipeline: a loaded one
    (default: load opts.avatar and opts.engine); clips: the `RealClip`s to send (default: the
    first opts.utterances of `real_validation_set`)."""
    from presenter.data.align_real import real_validation_set
    from presenter.stream.pipeline import load_pipeline

    pipeline = pipeline or load_pipeline(opts.avatar, opts.engine)
    clips = clips if clips is not None else real_validation_set()[:opts.utterances]
    if not clips:
        raise UserError("no aligned test utterances to send (apt-get install pocketsphinx-testdata)")
    sent, utts = call_audio(clips, opts.gap_s)
    load_before, t = os.getloadavg()[0], time.monotonic()
    client, sent_start, counters = asyncio.run(record_call(pipeline, sent, tail_s=pipeline.audio_delay_s + 1.5))
    call_s = time.monotonic() - t
    tl = _timeline(client)
    phones, lag = place_phones(tl, sent, sent_start, utts)
    present = [i for i, f in enumerate(tl.frames) if f is not None]
    measured = mouth_openings(tl.frames[i] for i in present)
    openings = np.full(len(tl.frames), np.nan)
    openings[present] = measured
    scores = phonetic_scores(openings, FPS, phones)
    rec = client.received
    video_span = rec.video_t[-1] - rec.video_t[0]
    audio_span = rec.audio_t[-1] - rec.audio_t[0] + len(rec.audio[-1]) / rec.audio_rate
    return {
        "options": asdict(opts), "engine": pipeline.engine, "driver": pipeline.driver_name,
        "avatar": str(pipeline.pack.root), "utterances": [u.name for u in utts],
        "speech_s": round(sum(u.duration_s for u in utts), 3), "call_s": round(call_s, 2),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],     # before, after the call
        "video": {"frames": len(rec.video_t), "fps_received": round((len(rec.video_t) - 1) / video_span, 2),
                  "missing_frames": len(tl.frames) - len(present),
                  "crop_box": list(face_box(pipeline))},
        "audio": {"returned_s": round(len(rec.audio_samples()) / rec.audio_rate, 3),
                  "arrival_span_s": round(audio_span, 3), "sent_s": round(len(sent) / SENT_RATE, 3),
                  "lag": lag},
        "clock": {"video_frame0_minus_audio_sample0_s": round(tl.v0 - tl.a0, 4),
                  "literal_rule_video_later_s": round(tl.literal_video_late_s, 4)},
        "server": counters,
        "judge": scores,
    }


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


DESCRIPTION = "Record a loopback WebRTC call of held-out read speech and judge its lip sync (DESIGN 7b)."


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m presenter.offline.live_call", description=DESCRIPTION,
        epilog="Examples:\n  python -m presenter.offline.live_call --engine baseline --json base.json\n"
               "  python -m presenter.offline.live_call --engine auto --utterances 5",
        formatter_class=_Formatter)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The call's options (also `presenter eval live`)."""
    p.add_argument("--engine", default="auto", choices=("auto", "syncformer", "baseline"),
                   help="mouth driver: auto = the trained SyncFormer when its weights are installed")
    p.add_argument("--avatar", default="default", help="'default' or an avatar pack folder")
    p.add_argument("--utterances", type=int, default=10,
                   help="pocketsphinx test utterances to send, 1-10")
    p.add_argument("--gap-s", type=float, default=1.0, help="silence after each utterance, seconds")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Measure and report a call for parsed `add_arguments` options -> exit code."""
    opts = Options(args.engine, args.avatar, args.utterances, args.gap_s)
    try:
        if not 1 <= opts.utterances <= 10:
            raise UserError(f"--utterances {opts.utterances}: use 1..10")
        if not 0.2 <= opts.gap_s <= 5:
            raise UserError(f"--gap-s {opts.gap_s}: use 0.2..5 seconds")
        print(json.dumps(asdict(opts)))
        if args.dry_run:
            return 0
        logging.basicConfig(level=logging.WARNING)
        report = measure(opts)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    v, a, j = report["video"], report["audio"], report["judge"]
    lag = a["lag"]["returned_after_sent_s"]
    print(format_table([(f"{report['driver']} / {Path(report['avatar']).name}", j)]))
    print(f"video: {v['frames']} frames, {v['fps_received']} fps received, {v['missing_frames']} missing; "
          f"audio: {a['returned_s']} s returned over a {a['arrival_span_s']} s call "
          f"({a['sent_s']} s sent); voice returned {lag['median'] * 1000:.0f} ms after sending "
          f"(per phone {lag['min'] * 1000:.0f}..{lag['max'] * 1000:.0f} ms), {a['lag']['inserted_s']} s of gaps "
          f"inserted into the utterances, {a['lag']['dropped_s']} s dropped")
    print(f"server: {report['server']}; load average {report['load_average_1min']} on {os.cpu_count()} cores")
    if not a["lag"]["placed_reliably"]:
        print(f"WARNING: the returned voice matches the sent one poorly ({a['lag']['mismatch_db']} dB RMS log-mel "
              f"difference, over {MISMATCH_MAX_DB}): the phones cannot be placed reliably, so these scores do not "
              "judge lip sync; see audio.lag.per_utterance and server in the JSON")
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
