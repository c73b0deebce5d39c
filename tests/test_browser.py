"""End to end in a real browser: `python -m presenter.serve` as a user starts it, Debian's
Chromium (driven by Playwright) with a WAV file as its microphone, everything on 127.0.0.1.

What a user would see is checked in the page: frames shown (requestVideoFrameCallback), the
mouth opening after each spoken phrase, the measured mic-to-screen latency and A/V offset
(web/probe.js), and the OBS viewer page showing the same presenter.

The server runs the loudness driver and the warp renderer (`--engine baseline --renderer
baseline`): this test is about the page, the transport and the viewer, and Chromium, the server
and a CPU hog on 2 cores leave the learned driver no time (it then rests the mouth by design, see
docs/live.md). The page's mouth probe counts the dark share of the mouth box, which the warp's
drawn cavity raises; the generator's open mouth on the smiling default avatar shows teeth and
lips, not a dark hole, so the probe does not see it open. The default path (SyncFormer +
generator) is tested over the same WebRTC stack by tests/test_server.py and measured in a real
page by `presenter bench live --browser` and `presenter eval live`.
"""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from presenter.server.chromium import CHROMIUM, WARMUP_MS, browser_call, healthz, server_process

LISTEN_S = 14.0          # the fake microphone loops every ~5.4 s: about 7 phrases

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (scripts/setup.sh installs it)"),
]


@pytest.fixture(scope="module")
def server(live_pipeline, live_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """`python -m presenter.serve --engine baseline --renderer baseline` on a free loopback port;
    yields (base url, process)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    try:
        with server_process(live_home, log, ("--engine", "baseline", "--renderer", "baseline")) as running:
            yield running
    except RuntimeError as e:
        pytest.fail(str(e))


def test_browser_mic_to_presenter_and_viewer(server, speech_wav, tmp_path: Path) -> None:
    """Chromium's (fake) microphone drives the presenter: frames keep being shown over a
    127.0.0.1 candidate pair, the badge names the engine, the mouth opens after each phrase and
    not otherwise, past the warm-up mouth and returned voice start together, the viewer page
    shows the program, and the session is gone after Stop."""
    url, proc = server
    with urllib.request.urlopen(url + "/info", timeout=5) as r:
        info = json.load(r)
    call = browser_call(url, speech_wav.path, listen_s=LISTEN_S, server_pid=proc.pid, screenshots=tmp_path)
    probe = call.probe
    (tmp_path / "probe.json").write_text(json.dumps(probe))
    pairs = np.array(probe["latencies_ms"]).reshape(-1, 2)
    lat, first = call.latencies_ms()
    av = call.av_offsets_ms()
    vstats = call.video_stats
    print(f"\nbrowser: shown {call.shown_fps:.1f} fps (getStats {vstats.get('framesPerSecond')}, "
          f"{vstats.get('framesDecoded')} decoded); viewer {call.viewer_fps:.1f} fps; audio {call.audio_stats}")
    if len(lat):
        print(f"mic->screen latency over {len(lat)} phrases: median {np.median(lat):.0f} ms, "
              f"p95 {np.percentile(lat, 95):.0f} ms; first {WARMUP_MS / 1000:.1f} s after connecting: "
              f"{np.round(first).tolist()} ms")
    if len(av):
        print(f"A/V offset (mouth onset - voice onset, > 0 = lips late) over {len(av)}: median {np.median(av):.0f} ms, "
              f"range {av.min():.0f}..{av.max():.0f} ms")
    print(f"server CPU {call.server_cpu_pct:.0f} % of one core (1 presenter + 1 viewer); page read-out: {call.readout}")
    print(f"server stream: {call.server_stats}")
    print(f"onsets: mic {probe['mic_onsets']}, mouth {probe['mouth_onsets']}, voice {probe['voice_onsets']}; "
          f"screenshots in {tmp_path}")

    # What a user sees, with bounds a busy machine still meets (fps and latency on this machine:
    # `presenter bench live --browser`).
    assert not call.errors, call.errors
    assert ("SyncFormer" in call.badge) == (info["engine"] == "syncformer"), (call.badge, info["engine"])
    assert call.pair == ["127.0.0.1", "127.0.0.1"], call.pair
    shown0, shown1, shown2 = call.shown
    assert shown0 < shown1 < shown2, call.shown                 # frames are shown, and keep coming
    assert call.viewer_shown > 25                               # the viewer page shows the program
    assert probe["mic_onsets"] >= 5
    # The mouth opens with the phrases, within 1 s of the microphone for some. Not asserted per
    # phrase: with a CPU hog on the 2 cores the page shows frames late and bunched (mic-to-screen
    # up to 1 s), and the probe then misses closures between phrases; presenter bench live
    # measures how many phrases open the mouth and how fast.
    assert probe["mouth_onsets"] >= 3 and len(pairs) >= 2, (probe["mouth_onsets"], pairs)
    assert probe["mouth_onsets"] <= probe["mic_onsets"] + 2     # and not in the silences
    # Past the warm-up, mouth and returned voice start together: the probe pairs onsets within
    # +-500 ms, so a lip or voice path that lags by a phrase leaves few pairs or a median near the
    # window's edge. The bound is loose on purpose: on 2 busy cores Chromium's audio playout delay
    # alone moved the median to -262 ms once (voice late, mouth on time); the offset itself is
    # measured by `presenter bench live --browser` and `presenter eval live`.
    assert len(av) >= 3 and abs(np.median(av)) < 400, av
    assert call.during["sessions"] == 1 and call.during["viewers"] == 1
    assert call.after["sessions"] == 0


@pytest.mark.parametrize("flags, words", [
    (["--deny-permission-prompts", "--use-fake-device-for-media-stream"], "permission was denied"),
    (["--use-fake-ui-for-media-stream"], "No microphone was found"),     # headless Chromium has no real device
])
def test_page_explains_microphone_errors_in_words(server, flags: list[str], words: str) -> None:
    """A refused microphone and a missing one are explained on the page, and Start works again."""
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", *flags])
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.click("#start")
            page.wait_for_function("document.getElementById('error').textContent !== ''", timeout=10000)
            assert words in page.inner_text("#error")
            assert page.is_enabled("#start") and not page.is_enabled("#stop")
        finally:
            browser.close()
    assert healthz(url)["sessions"] == 0
