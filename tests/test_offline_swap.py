"""`presenter swap`: refused without a consent statement or with bad inputs (exit 2, nothing written);
with consent, the source's face on the target video, labelled, watermarked, the consent in its metadata."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from presenter.cli import main

CONSENT = "Eileen Collins (public-domain NASA portrait) and the test's own video; test use only"


@pytest.fixture()
def inputs(tmp_path: Path, astronaut: np.ndarray) -> tuple[Path, Path]:
    """The astronaut portrait as the source and a 1 s video of it as the target."""
    import av

    src = tmp_path / "source.png"
    cv2.imwrite(str(src), astronaut[..., ::-1])
    target = tmp_path / "target.mp4"
    with av.open(str(target), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        frame = cv2.resize(astronaut, (256, 256))
        for _ in range(25):
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(s.encode(None))
    return src, target


def _swap(args: list[str], out: Path, capsys: pytest.CaptureFixture) -> str:
    before = set(out.parent.iterdir())
    assert main(["swap", *args, "-o", str(out)]) == 2
    assert set(out.parent.iterdir()) == before, "a refused swap left files behind"
    return capsys.readouterr().err


@pytest.mark.parametrize("consent", [None, "", "   ", "yes"])
def test_swap_without_a_consent_statement_is_refused(inputs, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                     consent: str | None) -> None:
    src, target = inputs
    args = ["--source", str(src), "--target", str(target)] + ([] if consent is None else ["--consent", consent])
    err = _swap(args, tmp_path / "out.mp4", capsys)
    assert "--consent" in err


def test_swap_checks_its_inputs(inputs, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src, target = inputs
    assert "is an image" in _swap(["--source", str(src), "--target", str(src), "--consent", CONSENT],
                                  tmp_path / "out.mp4", capsys)
    assert "does not exist" in _swap(["--source", str(tmp_path / "nobody.png"), "--target", str(target),
                                      "--consent", CONSENT], tmp_path / "out.mp4", capsys)
    assert "--face-index -1" in _swap(["--source", str(src), "--target", str(target), "--consent", CONSENT,
                                       "--face-index", "-1"], tmp_path / "out.mp4", capsys)
    (tmp_path / "out.mp4").write_bytes(b"keep")
    assert "already exists" in _swap(["--source", str(src), "--target", str(target), "--consent", CONSENT],
                                     tmp_path / "out.mp4", capsys)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, hopper: np.ndarray) -> dict:
    """The astronaut's portrait (source) swapped into a 1 s video of Grace Hopper (target), through the
    CLI with the shipped swap generator. Neither portrait was in the swap generator's training."""
    import av

    d = tmp_path_factory.mktemp("swap")
    src, target, out = d / "astronaut.png", d / "hopper.mp4", d / "swapped.mp4"
    cv2.imwrite(str(src), astronaut[..., ::-1])
    frame = cv2.resize(hopper, (256, 300))                  # 512 x 600 -> half size
    with av.open(str(target), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 256, 300, "yuv420p"
        for _ in range(25):
            c.mux(s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(s.encode(None))
    assert main(["swap", "--source", str(src), "--target", str(target), "--consent", CONSENT, "-o", str(out)]) == 0
    return {"dir": d, "source": src, "target": target, "out": out, "target_frame": frame, "source_frame": astronaut}


def test_swap_writes_a_labelled_watermarked_video_with_the_consent(swapped: dict) -> None:
    """Same frames, size and rate as the target; the SYNTHETIC title; the consent statement, both inputs'
    sha256 and a time in the metadata; the watermark found, also after an H.264 re-encode at CRF 28;
    no temporary file left."""
    import hashlib
    import json

    import av

    from presenter.offline.media import metadata, probe_video, read_frames
    from presenter.watermark import verify_file

    info = probe_video(swapped["out"])
    assert (info.width, info.height, info.n_frames, float(info.fps)) == (256, 300, 25, 25.0)
    meta = metadata(swapped["out"])
    assert meta["title"].startswith("SYNTHETIC")
    made = json.loads(meta["description"])
    assert made["consent"] == CONSENT and made["synthetic"] is True and made["consent_time_utc"]
    for key in ("source", "target"):
        assert made["inputs"][key]["sha256"] == hashlib.sha256(swapped[key].read_bytes()).hexdigest()
    d = verify_file(swapped["out"])
    assert d.found and d.payload is not None and f"{d.payload.run_id:08x}" == made["job_id"]
    again = swapped["dir"] / "reencoded.mp4"            # and after an H.264 re-encode at CRF 28
    with av.open(str(again), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = 256, 300, "yuv420p", {"crf": "28"}
        for f in read_frames(swapped["out"]):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    d = verify_file(again)
    again.unlink()
    assert d.found and d.payload is not None and f"{d.payload.run_id:08x}" == made["job_id"]
    assert sorted(p.name for p in swapped["dir"].iterdir()) == ["astronaut.png", "hopper.mp4", "swapped.mp4"]


def test_swap_replaces_the_face_and_keeps_the_rest(swapped: dict) -> None:
    """Inside the target's face the pixels change; away from it (the frame's corners) they stay the target's."""
    from presenter.offline.media import read_frames

    out = list(read_frames(swapped["out"]))[12].astype(np.float32)
    before = list(read_frames(swapped["target"]))[12].astype(np.float32)      # as decoded: both are H.264
    diff = np.abs(out - before).mean(axis=2)
    face = diff[95:150, 100:160]            # Grace Hopper's eyes to mouth in the 256 x 300 frame
    corners = np.concatenate([diff[:40, :40].ravel(), diff[:40, -40:].ravel(), diff[-40:, :40].ravel()])
    assert face.mean() > 8 * max(corners.mean(), 0.5), (face.mean(), corners.mean())
    assert corners.mean() < 3.0, corners.mean()


def test_swapped_face_takes_the_sources_shape_and_moves_toward_its_identity(swapped: dict) -> None:
    """The landmarker's fitted mesh on the output is nearer the source's face shape than the target's,
    and dlib's identity descriptor of the output is nearer the source than the target's own was."""
    from presenter.data.identities import IdentityEncoder
    from presenter.face.fit import fit_points
    from presenter.face.landmarker import FaceLandmarker
    from presenter.offline.media import read_frames
    from presenter.train.evaluate_swap import _shape_distance

    out = np.ascontiguousarray(list(read_frames(swapped["out"]))[12])
    with FaceLandmarker("image", max_faces=1) as lm:
        seen = {k: lm.detect(np.ascontiguousarray(img))[0] for k, img in
                (("source", swapped["source_frame"]), ("target", swapped["target_frame"]), ("out", out))}
    canon = {k: fit_points(o.landmarks, o.matrix).canon for k, o in seen.items()}
    assert _shape_distance(canon["out"], canon["source"]) < _shape_distance(canon["out"], canon["target"])
    enc = IdentityEncoder()
    ident = {k: enc.descriptor(img, seen[k].landmarks) for k, img in
             (("source", swapped["source_frame"]), ("target", swapped["target_frame"]), ("out", out))}
    dist = {k: float(np.linalg.norm(ident["out"] - ident[k])) for k in ("source", "target")}
    # Measured: swapped to source 0.59, swapped to target 0.67, target to source 0.68.
    assert dist["source"] < float(np.linalg.norm(ident["target"] - ident["source"])) and dist["source"] < dist["target"]
