"""`presenter bench live`: the command that holds the speed numbers the tests no longer assert."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from presenter.data.align_real import TESTDATA_DIR, transcripts

pytestmark = pytest.mark.skipif(not transcripts(), reason=f"no pocketsphinx test data under {TESTDATA_DIR}")


def test_real_speech_is_read_speech_of_the_asked_length() -> None:
    """The bench's input: pocketsphinx's read speech, joined and repeated to the asked length."""
    import numpy as np

    from presenter.bench_live import MIC_RATE, real_speech

    x = real_speech(12.0)
    assert x.shape == (12 * MIC_RATE,) and x.dtype == np.float32
    frames = x[: len(x) // 960 * 960].reshape(-1, 960)
    loud = np.sqrt((frames ** 2).mean(axis=1)) > 0.01
    assert 0.3 < loud.mean() < 0.95                     # speech with pauses between utterances


def test_bench_live_reports_a_session_and_writes_json(live_home: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A short run through the CLI: every frame of the pushed speech is counted, the mouth moved,
    the CPU used is measured, and the JSON holds the table's numbers beside the load average."""
    from presenter.cli import main

    monkeypatch.setenv("PRESENTER_HOME", str(live_home))
    out = tmp_path / "live.json"
    assert main(["bench", "live", "--engine", "baseline", "--seconds", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    run = report["stream"]
    assert run["engine"] == "baseline" and run["audio_s"] == 4
    assert run["frames"] == 100
    assert run["speaking_frames"] > 0 and run["latency_p50_ms"] is not None
    assert 0 <= run["reused"] <= run["frames"]
    assert run["cpu_s_per_audio_s"] > 0 and run["encode_p50_ms"] > 0
    assert len(report["machine"]["loadavg_start"]) == 3 and report["machine"]["cores"] >= 1
