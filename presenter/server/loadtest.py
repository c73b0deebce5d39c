"""How many simultaneous sessions hold 25 fps on this machine?

Starts `python -m presenter.serve` (or uses --url), then for each session count opens that many
calls from aiortc clients speaking a looping espeak-ng WAV (about 40 % speech, 60 % silence),
waits for them to settle, and measures over --seconds: the frames each client received per
second, the server's reused frames and late poses (from /metrics), and the server's CPU. The
clients run in this process on the same cores; they count complete video frames without
decoding them unless --decode is given, so that they leave the cores to the server.

Example:
  python -m presenter.server.loadtest --sessions 1,2,4,6 --seconds 15
"""
from __future__ import annotations

import argparse
import asyncio
import fractions
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import aiortc.rtcrtpreceiver
import av
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from presenter.server.client import Client, WavMicrophone, speech_phrases

log = logging.getLogger("presenter.loadtest")
HOLD_FPS = 24.0             # a session "holds 25 fps" when every client gets at least this many frames/s
HOLD_REUSED = 0.01          # ... and the server reused at most this share of frames


class _CountingVideoDecoder:
    """Stands in for the clients' VP8/H.264 decoder (load generator only): one tiny frame per
    complete encoded frame, so N clients do not spend the cores the server is measured on."""

    def decode(self, encoded_frame) -> list[av.VideoFrame]:
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.pts = encoded_frame.timestamp
        frame.time_base = fractions.Fraction(1, 90000)
        return [frame]


def _skip_client_video_decoding() -> None:
    original = aiortc.rtcrtpreceiver.get_decoder

    def get_decoder(codec):
        return _CountingVideoDecoder() if codec.mimeType.lower().startswith("video/") else original(codec)

    aiortc.rtcrtpreceiver.get_decoder = get_decoder


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _counters(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as r:
        text = await r.text()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


async def measure(url: str, n: int, seconds: float, samples: np.ndarray, pid: int | None) -> dict:
    clients = [Client(url, WavMicrophone(samples, 48000)) for _ in range(n)]
    for c in clients:
        await c.connect()
    await asyncio.gather(*(c.wait_connected() for c in clients))
    await asyncio.sleep(3.0)                                  # VP8 bitrate ramp, buffers settle
    m0, cpu0, t0 = await _counters(url), (_cpu_s(pid) if pid else 0.0), time.monotonic()
    counts0 = [len(c.received.video_t) for c in clients]
    await asyncio.sleep(seconds)
    dt = time.monotonic() - t0
    m1, cpu1 = await _counters(url), (_cpu_s(pid) if pid else 0.0)
    fps = [(len(c.received.video_t) - k) / dt for c, k in zip(clients, counts0)]
    await asyncio.gather(*(c.close() for c in clients))
    frames = m1["presenter_frames_total"] - m0["presenter_frames_total"]
    reused = m1["presenter_frames_reused_total"] - m0["presenter_frames_reused_total"]
    return {
        "sessions": n, "min_fps": min(fps), "mean_fps": float(np.mean(fps)),
        "reused_share": reused / max(frames, 1),
        "late_poses": m1["presenter_poses_late_total"] - m0["presenter_poses_late_total"],
        "server_cpu_pct": 100 * (cpu1 - cpu0) / dt if pid else float("nan"),
        "load1": os.getloadavg()[0],
    }


async def run(url: str, counts: list[int], seconds: float, pid: int | None) -> list[dict]:
    samples, _ = speech_phrases()
    rows = []
    for n in counts:
        row = await measure(url, n, seconds, samples, pid)
        row["holds"] = row["min_fps"] >= HOLD_FPS and row["reused_share"] <= HOLD_REUSED
        log.info("%s", row)
        rows.append(row)
        await asyncio.sleep(2.0)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m presenter.server.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="a running server (default: start one on a free loopback port)")
    p.add_argument("--sessions", default="1,2,3,4,6", help="comma-separated session counts to try, in order")
    p.add_argument("--seconds", type=float, default=15.0, help="measuring time per count, s (after 3 s settling)")
    p.add_argument("--decode", action="store_true",
                   help="clients decode the video too (default: they count complete frames without decoding)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    counts = [int(x) for x in args.sessions.split(",")]
    proc, url, pid = None, args.url, None
    if url is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "presenter.serve", "--port", str(port),
                                 "--max-sessions", str(max(counts))], stderr=subprocess.DEVNULL)
        url, pid = f"http://127.0.0.1:{port}", proc.pid
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
    from presenter.server.sdp import restrict_ice_to_loopback

    restrict_ice_to_loopback()
    if not args.decode:
        _skip_client_video_decoding()
    try:
        rows = asyncio.run(run(url, counts, args.seconds, pid))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait()
    sys.stdout.write("sessions  min fps  mean fps  reused %  late poses  server CPU %  load  holds 25 fps\n")
    for r in rows:
        sys.stdout.write(f"{r['sessions']:8d}  {r['min_fps']:7.1f}  {r['mean_fps']:8.1f}  "
                         f"{100 * r['reused_share']:8.2f}  {r['late_poses']:10.0f}  {r['server_cpu_pct']:12.0f}  "
                         f"{r['load1']:4.1f}  "
                         f"{'yes' if r['holds'] else 'no'}\n")
    held = [r["sessions"] for r in rows if r["holds"]]
    sys.stdout.write(f"largest count holding 25 fps: {max(held) if held else 0}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
