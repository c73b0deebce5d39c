"""`presenter lipsync --batch`: rows run in order, a failed row is reported and the rest go on, finished
outputs are skipped on a rerun, and a summary table is printed."""
from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from presenter.cli import main

SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")


def write_face_video(path: Path, face: np.ndarray) -> None:
    """A 1 s, 25 fps, 256 px H.264 video of a still RGB face."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        frame = cv2.resize(face, (256, 256), interpolation=cv2.INTER_AREA)
        for _ in range(25):
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(s.encode(None))


@pytest.mark.skipif(not SPEECH.exists(), reason="pocketsphinx-testdata is not installed")
def test_batch_reports_failures_and_resumes(tmp_path: Path, astronaut: np.ndarray,
                                            capsys: pytest.CaptureFixture, one_torch_thread) -> None:
    write_face_video(tmp_path / "face.mp4", astronaut)
    (tmp_path / "jobs.csv").write_text(f"face,audio,output\nface.mp4,{SPEECH},first.mp4\n"
                                       "face.mp4,missing.wav,second.mp4\n")
    out = tmp_path / "out"
    args = ["lipsync", "--batch", str(tmp_path / "jobs.csv"), "-o", str(out), "--engine", "baseline",
            "--renderer", "baseline"]
    assert main(args) == 2                                     # one row failed
    printed = capsys.readouterr()
    assert "1 done, 0 skipped (already there), 1 failed" in printed.out
    assert "missing.wav does not exist" in printed.out and "rows 2" in printed.err
    assert sorted(p.name for p in out.iterdir()) == ["first.mp4"]
    made = (out / "first.mp4").stat().st_mtime_ns

    (tmp_path / "missing.wav").write_bytes((SPEECH).read_bytes())
    assert main(args) == 0                                     # resumed: row 1 skipped, row 2 done
    assert "1 done, 1 skipped (already there), 0 failed" in capsys.readouterr().out
    assert (out / "first.mp4").stat().st_mtime_ns == made
    assert sorted(p.name for p in out.iterdir()) == ["first.mp4", "second.mp4"]


def test_batch_csv_without_a_face_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "jobs.csv").write_text("video,speech\na.mp4,b.wav\n")
    assert main(["lipsync", "--batch", str(tmp_path / "jobs.csv"), "-o", str(tmp_path / "out")]) == 2
    assert "header row" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
