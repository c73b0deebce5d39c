"""`presenter bench networks`: the table's numbers hang together and the JSON, the plot and the
measurements for '--backend auto' are written. Speeds themselves are not asserted (docs/performance.md)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from presenter.cli import main


@pytest.mark.usefixtures("one_torch_thread")
def test_bench_networks_writes_consistent_json_plot_and_auto_choice(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Every (network, backend, batch) row is there; FLOPs grow in proportion to the batch and are the same
    for both backends; GFLOP/s and the matmul share follow from them and the in-run matmul rate; the PNG
    is written; 'auto' then picks the faster measured backend."""
    from presenter.engines.base import measurements_path, resolve_backend

    monkeypatch.setenv("PRESENTER_HOME", str(tmp_path / "home"))
    out_json, out_png = tmp_path / "nets.json", tmp_path / "nets.png"
    assert main(["bench", "networks", "--networks", "syncformer,generator", "--batches", "1,2", "--repeats", "5",
                 "--max-seconds", "0.5", "--matmul-n", "256", "--json", str(out_json), "--plot", str(out_png)]) == 0
    result = json.loads(out_json.read_text())
    rows = result["rows"]
    assert {(r["network"], r["backend"], r["batch"]) for r in rows} == {
        (n, b, k) for n in ("syncformer", "generator") for b in ("torch", "onnxruntime") for k in (1, 2)}
    peak = result["matmul_gflop_per_s"]["start"]
    assert peak["peak"] == max(peak["torch"], peak["onnxruntime"]) > 0
    for r in rows:
        same = next(x for x in rows if x["network"] == r["network"] and x["batch"] == r["batch"] and x is not r)
        assert r["gflop"] == same["gflop"]
        one = next(x for x in rows if x["network"] == r["network"] and x["batch"] == 1)
        assert r["gflop"] == pytest.approx(r["batch"] * one["gflop"], rel=1e-6)
        assert r["p95_ms"] >= r["p50_ms"] > 0 and r["calls"] >= 5
        assert r["gflop_per_s"] == pytest.approx(r["gflop"] / r["p50_ms"] * 1e3)
        assert r["matmul_share"] == pytest.approx(r["gflop_per_s"] / r["matmul_gflop_per_s"])
        assert r["matmul_gflop_per_s"] > 0
    gen = next(r for r in rows if r["network"] == "generator" and r["batch"] == 1)
    assert 0.1 <= gen["gflop"] <= 0.6                        # the live preset's budget (docs/generator.md)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    measured = json.loads(measurements_path().read_text())
    (per_machine,) = measured.values()
    fastest = min(per_machine["generator"], key=per_machine["generator"].get)
    assert resolve_backend("auto", "generator") == fastest
    assert np.isfinite([r["matmul_share"] for r in rows]).all()


def test_bench_networks_refuses_bad_batches(capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --batches value exits 2 naming the flag, before anything is timed."""
    assert main(["bench", "networks", "--batches", "0,x"]) == 2
    assert "--batches" in capsys.readouterr().err
