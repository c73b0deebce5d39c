"""`presenter lipsync --batch --ray local`: the rows run as tasks on a real local Ray cluster, with the local
pool's behaviour (watermarked outputs, a failed row alone, finished rows skipped on a rerun); without ray
or without a cluster at the address, a clear refusal (exit 2)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from presenter.cli import main
from test_install import WITHOUT_EXTRAS
from test_offline_batch import SPEECH, write_face_video

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'presenter[ray]'")
RAY_SESSIONS = Path(os.environ.get("RAY_TMPDIR", tempfile.gettempdir())) / "ray"   # where ray.init puts a session


@pytest.fixture
def no_ray_left() -> Iterator[None]:
    """Whatever a test does, no Ray connection (or local cluster) outlives it."""
    yield
    ray.shutdown()


def ray_tasks_run(sessions_before: set[Path]) -> int:
    """Tasks named run_row that Ray workers ran in the local clusters started since sessions_before (their
    logs mark each task with a ':task_name:' line)."""
    return sum(log.read_text(errors="replace").count(":task_name:run_row")
               for session in set(RAY_SESSIONS.glob("session_2*")) - sessions_before
               for log in (session / "logs").glob("worker-*.out"))


@pytest.mark.skipif(not SPEECH.exists(), reason="pocketsphinx-testdata is not installed")
def test_ray_batch_dubs_rows_alone_and_resumes(tmp_path: Path, astronaut: np.ndarray,
                                               capsys: pytest.CaptureFixture, no_ray_left: None) -> None:
    """Two rows are dubbed by Ray tasks and carry the watermark, a row with a missing file fails alone,
    and a rerun skips the finished rows."""
    from presenter.watermark import verify_file

    write_face_video(tmp_path / "face.mp4", astronaut)
    sessions = set(RAY_SESSIONS.glob("session_2*"))
    (tmp_path / "jobs.csv").write_text(f"face,audio,output\nface.mp4,{SPEECH},first.mp4\n"
                                       "face.mp4,missing.wav,second.mp4\n"
                                       f"face.mp4,{SPEECH},third.mp4\n")
    out = tmp_path / "out"
    args = ["lipsync", "--batch", str(tmp_path / "jobs.csv"), "-o", str(out), "--engine", "baseline",
            "--renderer", "baseline", "--ray", "local"]
    assert main(args) == 2                                     # row 2 failed
    printed = capsys.readouterr()
    assert "2 done, 0 skipped (already there), 1 failed" in printed.out
    assert "missing.wav does not exist" in printed.out and "rows 2" in printed.err
    assert sorted(p.name for p in out.iterdir()) == ["first.mp4", "third.mp4"]
    ids = set()
    for name in ("first.mp4", "third.mp4"):
        d = verify_file(out / name)
        assert d.found and d.payload is not None, name
        ids.add(d.payload.run_id)
    assert len(ids) == 2                                       # each task is its own job
    assert not ray.is_initialized()                            # the batch shut its cluster down
    assert ray_tasks_run(sessions) == 3                        # one task per row, in Ray's workers
    made = {n: (out / n).stat().st_mtime_ns for n in ("first.mp4", "third.mp4")}

    (tmp_path / "jobs.csv").write_text(f"face,audio,output\nface.mp4,{SPEECH},first.mp4\n"
                                       f"face.mp4,{tmp_path / 'nowhere.wav'},second.mp4\n"
                                       f"face.mp4,{SPEECH},third.mp4\n")
    assert main(args) == 2                                     # rerun: rows 1 and 3 skipped, row 2 still bad
    assert "0 done, 2 skipped (already there), 1 failed" in capsys.readouterr().out
    assert {n: (out / n).stat().st_mtime_ns for n in made} == made
    assert ray_tasks_run(sessions) == 6


def test_ray_refusals(tmp_path: Path, capsys: pytest.CaptureFixture, no_ray_left: None) -> None:
    """--ray with --workers, an address where no cluster listens, and ray not installed: exit 2 with the
    reason, and no output folder."""
    (tmp_path / "jobs.csv").write_text("face,audio\nface.mp4,speech.wav\n")
    out = tmp_path / "out"
    args = ["lipsync", "--batch", str(tmp_path / "jobs.csv"), "-o", str(out)]
    assert main([*args, "--ray", "local", "--workers", "2"]) == 2
    assert "drop --workers" in capsys.readouterr().err
    assert main([*args, "--ray", "127.0.0.1:1"]) == 2          # port 1: nothing listens
    assert "no Ray cluster answers there" in capsys.readouterr().err
    assert main([*args, "--ray", "headnode"]) == 2               # no port
    assert "give HOST:PORT" in capsys.readouterr().err
    r = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, "ray", *args, "--ray", "local"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "pip install 'presenter[ray]'" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
