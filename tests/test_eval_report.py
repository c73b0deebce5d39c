"""`presenter eval --suite ...`: the report's numbers are the 7b judge's on the same real speech, its
files are whole, and bad arguments are refused with exit 2 before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from presenter.cli import build_parser, main

UTTERANCES = 2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def baseline_report(tmp_path_factory: pytest.TempPathFactory, baseline_pipeline) -> tuple[Path, dict]:
    """The lipsync suite, baseline engine, on the first UTTERANCES held-out utterances and the default avatar."""
    out = tmp_path_factory.mktemp("eval") / "report"
    assert main(["eval", "--suite", "lipsync", "--engines", "baseline", "--utterances", str(UTTERANCES),
                 "--avatar", str(baseline_pipeline.pack.root), "-o", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.usefixtures("one_torch_thread")
def test_lipsync_report_matches_the_judge_run_directly(baseline_report: tuple[Path, dict], baseline_pipeline) -> None:
    """The loudness driver and warp renderer speak the same utterances here, judged by phonetic_scores
    directly: report.json holds the same scores at offset 0 and at the best offset, the same offset
    curve and per-phone values; report.md shows them; the plots are PNGs."""
    from presenter.data.align_real import real_validation_set
    from presenter.offline.judge import BILABIALS, OPEN_VOWELS, STOPS, mouth_openings, phonetic_scores
    from presenter.motion.base import is_rest
    from presenter.offline.lipsync import drive
    from presenter.stream.pipeline import load_pipeline

    out, report = baseline_report
    # The pack as the report reads it, from its folder (a pack just created in memory differs slightly).
    pipeline = load_pipeline(str(baseline_pipeline.pack.root), "baseline", "baseline")
    clips = real_validation_set()[:UTTERANCES]
    openings, phones, t0 = [], [], 0.0
    for clip in clips:
        poses = drive(pipeline.new_driver(), clip.audio)
        openings.append(mouth_openings(pipeline.renderer.render(i, None if is_rest(p) else p)
                                       for i, p in enumerate(poses)))
        phones += [(ph, s + t0, e + t0) for ph, s, e in clip.phones]
        t0 += len(poses) / 25
    direct = phonetic_scores(np.concatenate(openings), 25, phones)

    lips = report["lipsync"]
    assert lips["utterances"] == [c.name for c in clips]
    got = lips["engines"]["baseline"]["judge"]
    assert got["offset_frames"] == direct["offset_frames"] and got["frames"] == direct["frames"]
    for at in ("at_zero", "at_offset"):
        for key in ("pbm_sealed_n", "pbm_n", "tdkg_open_n", "tdkg_n", "vowel_n"):
            assert got[at][key] == direct[at][key], (at, key)
        for key in ("pbm_sealed", "tdkg_open", "labial_auc", "pbm_min_median", "vowel_opening_mean"):
            assert got[at][key] == pytest.approx(direct[at][key], abs=1e-9), (at, key)
    assert {int(k): v for k, v in got["separation"].items()} == pytest.approx(direct["separation"])
    assert got["done_when"]["passed"] is direct["done_when"]["passed"]

    # Per-phone values: one per aligned phone of the class, the smallest bilabial value is the judge's.
    values = lips["engines"]["baseline"]["phone_openings"]["at_zero"]
    assert len(values["p/b/m"]) == direct["at_zero"]["pbm_n"] == sum(p in BILABIALS for p, _, _ in phones)
    assert len(values["t/d/k/g"]) == direct["at_zero"]["tdkg_n"] == sum(p in STOPS for p, _, _ in phones)
    assert len(values["open vowels"]) == direct["at_zero"]["vowel_n"] == sum(p in OPEN_VOWELS for p, _, _ in phones)
    assert np.median(values["p/b/m"]) == pytest.approx(direct["at_zero"]["pbm_min_median"])
    assert np.mean(values["open vowels"]) == pytest.approx(direct["at_zero"]["vowel_opening_mean"])

    md = (out / "report.md").read_text()
    s = direct["at_zero"]
    assert (f"| baseline | +0 | {s['pbm_sealed']:.2f} ({s['pbm_sealed_n']}/{s['pbm_n']}) | "
            f"{s['tdkg_open']:.2f} ({s['tdkg_open_n']}/{s['tdkg_n']}) | {s['labial_auc']:.2f} |") in md
    assert "| real people | | 0.80-1.00 | 0.62-0.91 | 0.92-1.00 | -1..+1 |" in md
    assert "Code: " in md and "code" in report          # the commit the numbers come from
    for png in ("lipsync_openings.png", "lipsync_offset.png"):
        assert f"]({png})" in md
        data = (out / png).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000
    assert sorted(p.name for p in out.parent.iterdir()) == ["report"]      # no temporary folder left behind


def test_an_existing_report_is_kept_without_force_and_replaced_with_it(baseline_report: tuple[Path, dict],
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """Without --force the report folder is refused (exit 2, untouched); with --force and no identities
    the image suite replaces it with a report that says what to run, and does not crash."""
    out, _ = baseline_report
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["eval", "--suite", "image", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert main(["eval", "--suite", "image", "--sequences", str(tmp_path / "none"), "--force", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    report = json.loads((out / "report.json").read_text())
    assert "presenter data identities" in report["image"]["skipped"] and "lipsync" not in report
    assert "skipped: run `presenter data identities` and `presenter data mouth-prior` first" in \
        (out / "report.md").read_text()


@pytest.mark.parametrize("argv, words", [
    (["eval", "--suite", "lips", "-o", "rep"], "--suite 'lips'"),
    (["eval", "--suite", "lipsync", "--engines", "baseline,wav2lip", "-o", "rep"], "--engines 'baseline,wav2lip'"),
    (["eval", "--suite", "lipsync", "--utterances", "-1", "-o", "rep"], "--utterances"),
    (["eval", "--suite", "speed", "--speed-repeats", "2", "-o", "rep"], "--speed-repeats"),
    (["eval", "--suite", "lipsync", "-o", "missing/rep"], "does not exist"),
    (["eval", "--suite", "lipsync"], "-o REPORT_DIR"),
    (["eval"], "--suite"),
    (["eval", "--suite", "lipsync", "-o", "rep", "generator"], "give one of them"),
])
def test_bad_arguments_exit_2_and_write_nothing(argv: list[str], words: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown suites or engines, numbers out of range, a missing -o: a message naming the flag, exit 2."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_eval_subcommands_still_parse() -> None:
    """`presenter eval live|syncformer|generator` keep their own options beside --suite."""
    from presenter.train import cli

    p = build_parser()
    a = p.parse_args(["eval", "live", "--engine", "baseline", "--utterances", "3"])
    assert a.func is cli._cmd_eval_live and a.engine == "baseline" and a.utterances == 3
    a = p.parse_args(["eval", "generator", "--max-ids", "2", "-o", "g.json"])
    assert a.func is cli._cmd_eval_generator and a.max_ids == 2 and a.output == Path("g.json")
    a = p.parse_args(["eval", "--suite", "all", "-o", "rep"])
    assert a.func is cli._cmd_eval_report and a.report_dir == Path("rep")


def test_dry_run_prints_the_resolved_options_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--dry-run: the suites and engines as they will run ('all' spelled out), no report folder."""
    out = tmp_path / "rep"
    assert main(["eval", "--suite", "all", "--engines", "generator,baseline", "-o", str(out), "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["suites"] == ["lipsync", "image", "speed"] and resolved["engines"] == ["generator", "baseline"]
    assert resolved["out"] == str(out) and not out.exists() and list(tmp_path.iterdir()) == []
