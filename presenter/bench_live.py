"""`presenter bench live`: how a live session runs on this machine, measured.

Without a browser, one `PresenterStream` (the server's session pipeline: driver, renderer,
colour conversion) is fed real read speech (Debian's pocketsphinx test data) in real time, as
a microphone over WebRTC arrives (20 ms chunks), for `seconds`; every frame it sends is
encoded as the server would send it (aiortc's VP8 and Opus encoders). With `browser=True`,
`python -m presenter.serve` runs as a user starts it and Debian's Chromium makes a loopback
call with the same speech as its microphone (presenter.server.chromium).

Reported beside the machine's load average (the numbers mean little without it): frames per
second, reused frames (renders that missed their frame), late poses, audio latency p50/p95,
render and encode time, and the CPU the process used per second of audio. The tests assert
behaviour only; these numbers live here.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from presenter.errors import UserError

log = logging.getLogger(__name__)

MIC_RATE = 48000
MIC_CHUNK_S = 0.02               # browsers send 20 ms audio frames
GAP_S = 0.6                      # silence between utterances
PROBE_GAP_S = 1.2                # ... in the browser call: the page's probe times a phrase only after
                                 # >= 300 ms of quiet on the microphone and of closed lips on screen
WARMUP_S = 1.0                   # frames of the first second are left out of the pace figures


def real_speech(seconds: float, rate: int = MIC_RATE, gap_s: float = GAP_S) -> np.ndarray:
    """Read speech from Debian's pocketsphinx-testdata, utterances joined with gap_s of silence and
    repeated to `seconds` -> (n,) float32 mono at `rate`."""
    from presenter.audio.io import as_float_mono, read_wav, resample
    from presenter.data.align_real import TESTDATA_DIR, transcripts

    found = transcripts()
    if not found:
        raise UserError(f"no pocketsphinx test data under {TESTDATA_DIR}: apt-get install pocketsphinx-testdata")
    gap = np.zeros(int(gap_s * rate), np.float32)
    parts, total = [], 0
    while total < seconds * rate:
        for _, wav, _ in found:
            pcm, sr = read_wav(wav)
            x = resample(as_float_mono(pcm), sr, rate)
            x = 0.5 * x / max(1e-6, float(np.abs(x).max()))
            parts += [gap, x]
            total += len(gap) + len(x)
            if total >= seconds * rate:
                break
    return np.concatenate(parts)[: int(seconds * rate)]


def _pct(xs: list[float] | np.ndarray, q: float) -> float | None:
    return float(np.percentile(xs, q)) if len(xs) else None


def _pct_ms(seconds: list[float], q: float) -> float | None:
    """The q-th percentile of durations in seconds, in ms (None for none)."""
    p = _pct(seconds, q)
    return None if p is None else 1000 * p


@dataclass
class LiveRun:
    """What one run measured. Times in seconds unless the name says otherwise."""
    engine: str
    driver: str
    renderer: str
    encoder: str                        # the SyncFormer's speech encoder precision / frames per call, e.g. "fp32/1"
    audio_s: float                      # speech pushed
    wall_s: float                       # first to last frame
    steady_s: float                     # wall time past the warm-up second (CPU is counted over it)
    frames: int
    fps: float                          # frames per second past the first second
    gap_p95_ms: float                   # time between consecutive frames, 95th percentile
    gap_max_ms: float
    reused: int                         # renders that missed their frame (the previous frame sent again)
    late_poses: int                     # frames whose mouth pose was not ready (pose held)
    degraded: int                       # frames drawn by the renderer's cheaper fallback (renders missed frames)
    underruns: int
    skipped_silence: int
    speaking_frames: int                # frames that showed a moved mouth
    latency_p50_ms: float | None        # audio pushed -> leaving with its frame
    latency_p95_ms: float | None
    av_offset_p50_ms: float | None      # pose time minus audio time, speaking frames (> 0: lips late)
    render_p50_ms: float | None
    render_p95_ms: float | None
    encode_p50_ms: float | None         # VP8 + Opus per frame
    encode_p95_ms: float | None
    cpu_s_per_audio_s: float            # process CPU seconds (all threads) per second of audio, steady
                                        # state past the warm-up (0.6 = 60 % of one core)
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass
class _Frame:
    t: float                    # loop time the frame left the stream
    reused: bool
    render_s: float | None
    latency_s: float | None
    speaking: bool              # a moved mouth (pose) was shown
    av_offset_s: float
    encode_s: float | None = None


def _encoders():
    """aiortc's VP8 and Opus encoders (what the server's senders use) -> encode(chunk) -> seconds."""
    from aiortc.codecs.opus import OpusEncoder
    from aiortc.codecs.vpx import Vp8Encoder

    from presenter.server.tracks import split_audio

    vp8, opus = Vp8Encoder(), OpusEncoder()

    def encode(chunk) -> float:
        t0 = time.perf_counter()
        vp8.encode(chunk.video)
        for piece in split_audio(chunk.audio):
            opus.encode(piece)
        return time.perf_counter() - t0

    return encode


async def _run_stream(pipeline, speech: np.ndarray, *, workers: int, encode: bool,
                      degrade: bool = True) -> tuple[list[_Frame], dict, float, float]:
    """Feed `speech` in real time and collect every chunk -> (frames, stream stats, wall s, CPU s)."""
    import dataclasses

    from presenter.stream.stream import StreamConfig

    loop = asyncio.get_running_loop()
    encode_fn = _encoders() if encode else None
    rows = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-work") as pool, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-encode") as enc_pool:
        stream = pipeline.stream(pool, config=StreamConfig(buffer_s=pipeline.audio_delay_s, live=True,
                                                              **({} if degrade else {"degrade_misses": 0})))
        n_frames = int(len(speech) / MIC_RATE * 25)
        step = int(MIC_RATE * MIC_CHUNK_S)

        async def feed() -> None:
            t0 = loop.time()
            for k, i in enumerate(range(0, len(speech), step)):
                x = np.round(speech[i:i + step] * 32767).astype(np.int16)
                stream.push_audio(np.stack([x, x], 1), MIC_RATE)
                await asyncio.sleep(max(0.0, t0 + (k + 1) * MIC_CHUNK_S - loop.time()))

        feeder = loop.create_task(feed())
        encodes: list[asyncio.Future] = []
        cpu0 = wall0 = None                   # CPU is counted from the end of the warm-up second
        async for chunk in stream:
            rows.append(_Frame(loop.time(), chunk.reused, chunk.render_s, chunk.latency_s, chunk.pose is not None,
                               chunk.av_offset_s))
            if cpu0 is None and rows[-1].t > rows[0].t + WARMUP_S:
                cpu0, wall0 = time.process_time(), time.perf_counter()
            if encode_fn is not None:
                encodes.append(loop.run_in_executor(enc_pool, encode_fn, chunk))
            if len(rows) >= n_frames:
                break
        for row, seconds in zip(rows, await asyncio.gather(*encodes)):
            row.encode_s = seconds
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        stats = dataclasses.asdict(stream.stats)
        await stream.close()
    return rows, stats, wall, cpu


def bench_stream(*, avatar: str = "default", engine: str = "auto", seconds: float = 30.0, workers: int = 2,
                 encode: bool = True, encoder: tuple[str, int] = ("int8", 2), degrade: bool = True) -> LiveRun:
    """One live session without the network: real speech in real time -> LiveRun. encoder: the
    SyncFormer's speech encoder (precision, frames per call); degrade False keeps the full renderer on
    every frame, as a machine with headroom runs it (what the CPU budget is about)."""
    from presenter.stream.pipeline import load_pipeline

    pipeline = load_pipeline(avatar, engine, encoder=encoder[0], encoder_every=encoder[1])
    speech = real_speech(seconds)
    load0 = os.getloadavg()
    rows, stats, wall, cpu = asyncio.run(_run_stream(pipeline, speech, workers=workers, encode=encode,
                                                     degrade=degrade))
    load1 = os.getloadavg()
    t = np.array([r.t for r in rows])
    steady = t > t[0] + WARMUP_S
    ts = t[steady]
    gaps_ms = np.diff(t) * 1000
    lat = [r.latency_s for r in rows if r.latency_s is not None]
    render = [r.render_s for r in rows if r.render_s is not None]
    enc = [r.encode_s for r in rows if r.encode_s is not None]
    av = [r.av_offset_s for r in rows if r.speaking]
    audio_s = len(speech) / MIC_RATE
    return LiveRun(
        engine=pipeline.engine, driver=pipeline.driver_name, renderer=pipeline.renderer.name,
        encoder=f"{encoder[0]}/{encoder[1]}" if pipeline.engine == "syncformer" else "-",
        audio_s=audio_s, wall_s=float(t[-1] - t[0]), steady_s=wall, frames=len(rows),
        fps=float((len(ts) - 1) / (ts[-1] - ts[0])) if len(ts) > 1 else 0.0,
        gap_p95_ms=float(np.percentile(gaps_ms, 95)), gap_max_ms=float(gaps_ms.max()),
        reused=stats["reused"], late_poses=stats["late_poses"], degraded=stats["degraded"],
        underruns=stats["underruns"],
        skipped_silence=stats["skipped_silence"], speaking_frames=sum(r.speaking for r in rows),
        latency_p50_ms=_pct_ms(lat, 50), latency_p95_ms=_pct_ms(lat, 95), av_offset_p50_ms=_pct_ms(av, 50),
        render_p50_ms=_pct_ms(render, 50), render_p95_ms=_pct_ms(render, 95),
        encode_p50_ms=_pct_ms(enc, 50), encode_p95_ms=_pct_ms(enc, 95),
        cpu_s_per_audio_s=cpu / wall,             # the speech is pushed in real time: wall s = audio s
        loadavg_before=load0, loadavg_after=load1)


@dataclass
class BrowserRun:
    """A loopback call from Chromium to `python -m presenter.serve` (times in ms).

    The latency and A/V offset come from the page's probe (web/probe.js), which sees a mouth open
    by the dark share of its box: the warp renderer's drawn cavity. The generator's mouth on the
    default avatar opens onto teeth and lips, which the probe cannot see, so with the generator these
    are None (`presenter eval live` measures the offset of that path by phonetics)."""
    engine: str
    renderer: str
    listen_s: float
    shown_fps: float                    # frames the page showed over the last second
    decoded_fps: float | None           # inbound video getStats framesPerSecond
    frames_decoded: int | None
    server_frames: int                  # the session's frames, and of those:
    server_reused: int                  # sent again because a render was late
    server_late_poses: int
    latency_p50_ms: float | None        # mic onset -> mouth onset on screen, past the warm-up
    latency_p95_ms: float | None
    phrases: int                        # microphone onsets, and of those
    phrases_with_mouth: int | None      # followed by a mouth onset within 1 s
    av_offset_p50_ms: float | None      # mouth onset - returned voice onset, past the warm-up
    audio_packets_discarded: int | None
    audio_concealed_pct: float | None   # returned audio the browser had to conceal
    server_cpu_pct_of_core: float
    viewer_fps: float
    viewer_audio_packets_discarded: int | None   # the same, on the viewer page (the program, OBS)
    viewer_audio_concealed_pct: float | None
    loadavg_before: tuple[float, float, float]
    loadavg_after: tuple[float, float, float]


def bench_browser(*, avatar: str = "default", engine: str = "auto", seconds: float = 30.0) -> BrowserRun:
    """The server in its own process, Chromium on the same machine, the same speech as the microphone."""
    from presenter.audio.io import write_wav
    from presenter.paths import home
    from presenter.server.chromium import browser_call, server_process

    speech = real_speech(max(10.0, seconds), gap_s=PROBE_GAP_S)
    with tempfile.TemporaryDirectory(prefix="presenter-bench-") as d:
        wav = Path(d) / "speech48k.wav"
        write_wav(wav, speech, MIC_RATE)
        load0 = os.getloadavg()
        with server_process(home(), Path(d) / "server.log", ("--avatar", avatar, "--engine", engine)) as (url, proc):
            with urllib.request.urlopen(url + "/info", timeout=5) as r:
                info = json.load(r)
            call = browser_call(url, wav, listen_s=seconds, server_pid=proc.pid)
        load1 = os.getloadavg()
    lat, _ = call.latencies_ms()
    av = call.av_offsets_ms()
    probe_sees_mouth = not info["renderer"].startswith("generator")
    if not probe_sees_mouth:
        log.info("the page's probe cannot see the generator's mouth open (BrowserRun's docstring): "
                 "no mic-to-screen latency or A/V offset from the page; see `presenter eval live`")
        lat = av = []
    a, va = call.audio_stats, call.viewer_audio_stats
    return BrowserRun(
        engine=info["engine"], renderer=info["renderer"], listen_s=call.listen_s, shown_fps=float(call.shown_fps),
        decoded_fps=call.video_stats.get("framesPerSecond"), frames_decoded=call.video_stats.get("framesDecoded"),
        server_frames=call.server_stats.get("frames", 0), server_reused=call.server_stats.get("reused", 0),
        server_late_poses=call.server_stats.get("late_poses", 0),
        latency_p50_ms=_pct(lat, 50), latency_p95_ms=_pct(lat, 95),
        phrases=call.probe["mic_onsets"],
        phrases_with_mouth=len(call.probe["latencies_ms"]) if probe_sees_mouth else None,
        av_offset_p50_ms=_pct(av, 50), audio_packets_discarded=a.get("packetsDiscarded"),
        audio_concealed_pct=_concealed_pct(a), server_cpu_pct_of_core=call.server_cpu_pct,
        viewer_fps=float(call.viewer_fps), viewer_audio_packets_discarded=va.get("packetsDiscarded"),
        viewer_audio_concealed_pct=_concealed_pct(va), loadavg_before=load0, loadavg_after=load1)


def _concealed_pct(stats: dict) -> float | None:
    """Share of an inbound audio track's samples the browser concealed (invented), in %."""
    total = stats.get("totalSamplesReceived")
    return 100 * stats["concealedSamples"] / total if total else None


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) < 10 else f"{v:.0f}"
    if isinstance(v, tuple):
        return " ".join(f"{x:.2f}" for x in v)
    return str(v)


def _table(title: str, run) -> None:
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for k, v in asdict(run).items():
        table.add_row(k, _fmt(tuple(v) if isinstance(v, list) else v))
    Console().print(table)


def run_live_bench(*, avatar: str, engine: str, seconds: float, workers: int, browser: bool, encode: bool,
                   json_path: Path | None, encoders: list[tuple[str, int]] | None = None,
                   degrade: bool = True) -> dict:
    """Run the stream bench once per speech-encoder setting (default int8/2, the server's), and the browser call if
    asked; print the tables, write the JSON ("stream": the first setting's run, "streams": all)."""
    from dataclasses import asdict

    if seconds < 3:
        raise UserError(f"--seconds {seconds}: use at least 3 (the first second is warm-up)")
    out: dict = {"machine": {"cores": os.cpu_count(), "loadavg_start": os.getloadavg()},
                 "options": {"avatar": avatar, "engine": engine, "seconds": seconds, "workers": workers,
                             "encode": encode, "browser": browser, "degrade": degrade}}
    runs = []
    for setting in encoders or [("int8", 2)]:
        run = bench_stream(avatar=avatar, engine=engine, seconds=seconds, workers=workers, encode=encode,
                           encoder=setting, degrade=degrade)
        runs.append(asdict(run))
        _table(f"live session without network, {seconds:.0f} s of read speech, encoder {run.encoder}", run)
    out["stream"], out["streams"] = runs[0], runs
    if browser:
        b = bench_browser(avatar=avatar, engine=engine, seconds=seconds)
        out["browser"] = asdict(b)
        _table(f"loopback call from Chromium, {b.listen_s:.0f} s", b)
    out["machine"]["loadavg_end"] = os.getloadavg()
    if json_path is not None:
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(out, indent=2) + "\n")
        tmp.rename(json_path)
        log.info("wrote %s", json_path)
    return out
