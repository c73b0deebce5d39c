"""A real browser call against the server: Debian's Chromium, driven by Playwright, with a WAV
file as its microphone, everything on 127.0.0.1.

Shared by the browser tests (tests/test_browser.py), which assert what a user would see, and
`presenter bench live --browser`, which reports how fast it was. One call opens the presenter
page (with the latency probe, web/probe.js) and, optionally, the viewer page, listens for a
while and reads back what the pages measured.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from presenter.errors import UserError

CHROMIUM = Path("/usr/bin/chromium")
WARMUP_MS = 1500          # phrases this soon after connecting wait for VP8's first key frame and
                          # the browser's jitter buffers: reported apart from the steady state


def chromium_flags(wav: Path) -> list[str]:
    """DESIGN.md section 7: headless Chromium with a fake microphone and loopback WebRTC."""
    return ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}", "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def healthz(url: str) -> dict:
    with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
        return json.load(r)


@contextlib.contextmanager
def server_process(home: Path, log_path: Path, args: tuple[str, ...] = (),
                   start_timeout_s: float = 180.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python -m presenter.serve` on a free loopback port with PRESENTER_HOME=home, its output
    in log_path; yields (base url, process) once /healthz answers, and stops it with Ctrl-C."""
    port = free_port()
    with open(log_path, "w") as log:
        env = dict(os.environ, PRESENTER_HOME=str(home))
        proc = subprocess.Popen([sys.executable, "-m", "presenter.serve", "--port", str(port), *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + start_timeout_s
        try:
            while True:
                try:
                    healthz(url)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"server did not start: {log_path.read_text()[-2000:]}") from None
                    time.sleep(0.2)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


SELECTED_PAIR_JS = """async (pc) => {
  const stats = await pc.getStats(); let pair = null; const cands = {};
  let selected = null;
  stats.forEach((s) => {
    if (s.type === 'local-candidate' || s.type === 'remote-candidate') cands[s.id] = s.address;
    if (s.type === 'transport' && s.selectedCandidatePairId) selected = s.selectedCandidatePairId;
  });
  stats.forEach((s) => {
    if (s.type === 'candidate-pair' && (s.id === selected || (!selected && s.nominated && s.state === 'succeeded'))) pair = s;
  });
  return pair ? [cands[pair.localCandidateId], cands[pair.remoteCandidateId]] : null;
}"""

VIDEO_STATS_JS = """async (pc) => {
  let out = null;
  (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'video') out = s; });
  return out && {framesDecoded: out.framesDecoded, framesPerSecond: out.framesPerSecond,
                 jitterMs: 1000 * out.jitterBufferDelay / out.jitterBufferEmittedCount};
}"""

AUDIO_STATS_JS = """async (pc) => {
  let out = null;
  (await pc.getStats()).forEach((s) => { if (s.type === 'inbound-rtp' && s.kind === 'audio') out = s; });
  return out && {packetsReceived: out.packetsReceived, packetsDiscarded: out.packetsDiscarded,
                 concealedSamples: out.concealedSamples, totalSamplesReceived: out.totalSamplesReceived};
}"""


@dataclass
class CallResult:
    """What the pages measured during one call (times in ms, performance.now() clock)."""
    errors: list[str]                 # uncaught page errors
    badge: str                        # the page's engine badge
    pair: list[str] | None            # [local, remote] address of the selected ICE candidate pair
    probe: dict                       # web/probe.js result (onsets, latencies, A/V offsets)
    shown: tuple[int, int, int]       # frames shown by the page: listening starts, ends, one second later
    shown_fps: float                  # frames shown over the last second of listening
    video_stats: dict                 # inbound video getStats (fps, frames decoded, jitter buffer)
    audio_stats: dict                 # inbound audio getStats (packets received / discarded, concealment)
    viewer_shown: int                 # frames shown by the viewer page (0 without one)
    viewer_fps: float
    viewer_audio_stats: dict          # the viewer page's inbound audio getStats ({} without one)
    readout: str                      # the page's latency read-out
    server_stats: dict                # GET /session/<id> at the end of listening
    server_cpu_pct: float             # the server process's CPU over the listening time, % of one core
    listen_s: float                   # how long the call was listened to
    during: dict                      # /healthz while the call ran
    after: dict                       # /healthz after Stop

    def latencies_ms(self, warmup_ms: float = WARMUP_MS) -> tuple[np.ndarray, np.ndarray]:
        """Mic-to-screen latency per phrase -> (steady state, warm-up)."""
        pairs = np.array(self.probe["latencies_ms"], float).reshape(-1, 2)
        steady = pairs[:, 0] - self.probe["started"] > warmup_ms
        return pairs[steady, 1], pairs[~steady, 1]

    def av_offsets_ms(self, warmup_ms: float = WARMUP_MS) -> np.ndarray:
        """Mouth onset minus returned-voice onset per phrase past the warm-up (> 0: lips late)."""
        pairs = np.array(self.probe["av_offsets_ms"], float).reshape(-1, 2)
        return pairs[pairs[:, 0] - self.probe["started"] > warmup_ms, 1]


def browser_call(url: str, wav: Path, *, listen_s: float, server_pid: int, viewer: bool = True,
                 screenshots: Path | None = None) -> CallResult:
    """Open the presenter page with `wav` as the microphone, press Start, listen for listen_s
    seconds (with the viewer page open too, if asked), read what the pages measured, press Stop."""
    if not CHROMIUM.exists():
        raise UserError(f"{CHROMIUM} is not installed (Debian package 'chromium'; scripts/setup.sh installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise UserError("playwright is not installed: pip install 'presenter[dev]'") from None

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=chromium_flags(wav))
        try:
            page = browser.new_page(viewport={"width": 900, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/?probe=1")
            page.wait_for_function("document.getElementById('avatar').textContent !== '–'")
            badge = page.inner_text("#badge")
            page.click("#start")
            page.wait_for_function("window.presenterPage.pc && window.presenterPage.pc.connectionState === 'connected'",
                                   timeout=30000)
            view = None
            if viewer:
                view = browser.new_page(viewport={"width": 512, "height": 512})
                view.goto(url + "/viewer")

            cpu0, t0 = cpu_seconds(server_pid), time.monotonic()
            shown0 = page.evaluate("window.presenterPage.counter.shown")
            page.wait_for_timeout(listen_s * 1000)
            listened = time.monotonic() - t0
            cpu_pct = 100 * (cpu_seconds(server_pid) - cpu0) / listened
            shown1 = page.evaluate("window.presenterPage.counter.shown")
            probe = page.evaluate("window.presenterProbe.result()")
            # Read after the call has run a while: right after 'connected' the nominated pair may
            # not be in the stats yet.
            pair = page.evaluate(f"({SELECTED_PAIR_JS})(window.presenterPage.pc)")
            shown_fps = page.evaluate("window.presenterPage.counter.fps()")
            vstats = page.evaluate(f"({VIDEO_STATS_JS})(window.presenterPage.pc)") or {}
            astats = page.evaluate(f"({AUDIO_STATS_JS})(window.presenterPage.pc)") or {}
            readout = page.inner_text("#latency")
            session = page.evaluate("window.presenterPage.session")
            with urllib.request.urlopen(f"{url}/session/{session}", timeout=5) as r:
                server_stats = json.load(r)
            if screenshots is not None:
                page.screenshot(path=str(screenshots / "presenter.png"))
            viewer_fps = view.evaluate("window.viewer.counter.fps()") if view else 0.0
            viewer_shown = view.evaluate("window.viewer.counter.shown") if view else 0
            vastats = (view.evaluate(f"({AUDIO_STATS_JS})(window.viewer.pc)") or {}) if view else {}
            if view and screenshots is not None:
                view.screenshot(path=str(screenshots / "viewer.png"))
            during = healthz(url)
            page.wait_for_timeout(1000)
            shown2 = page.evaluate("window.presenterPage.counter.shown")
            page.click("#stop")
            page.wait_for_timeout(500)
            after = healthz(url)
        finally:
            browser.close()
    return CallResult(errors, badge, pair, probe, (shown0, shown1, shown2), shown_fps, vstats, astats,
                      viewer_shown, viewer_fps, vastats, readout, server_stats, cpu_pct, listened, during, after)
