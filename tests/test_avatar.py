"""Avatar packs: made from a still or a video, complete, seamless, and refused cleanly on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from presenter.avatar.create import create_from_video
from presenter.avatar.pack import VERSION, load_pack
from presenter.cli import main
from presenter.errors import UserError
from presenter.face.canonical import FACE_OVAL
from presenter.face.guidance import render_guidance
from presenter.face.align import warp_points
from presenter.face.landmarker import FaceLandmarker

GUIDANCE_IOU = 0.8


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_pack_is_complete(astronaut_pack: Path) -> None:
    """Manifest, frames, meshes, neutral, transforms, crops, masks and references all present and consistent."""
    pack = load_pack(astronaut_pack)
    n = pack.n_frames
    assert pack.manifest["version"] == VERSION and pack.fps == 25 and n == 100
    assert pack.frames.shape == (n, 512, 512, 3)
    assert pack.face["verts_px"].shape == (n, 468, 3) and pack.face["canon"].shape == (n, 468, 3)
    assert pack.face["neutral"].shape == (468, 3)
    for s in (128, 256):
        assert pack.face[f"align_{s}"].shape == (n, 2, 3)
        assert pack.crops[s]["crops"].shape == (n, s, s, 3)
        assert pack.crops[s]["mouth_mask"].shape == (n, s, s)
    assert 1 <= len(pack.reference_indices) <= 4
    assert "NASA" in pack.manifest["attribution"] or "user-supplied" in pack.manifest["attribution"]
    assert (astronaut_pack / "preview.png").is_file()
    assert not list(astronaut_pack.parent.glob(".*tmp")), "no temporary folder left behind"


def test_smiling_portrait_records_its_gap_and_seals_when_commanded(astronaut_pack: Path, hopper: np.ndarray,
                                                                 tmp_path: Path) -> None:
    """The astronaut smiles with parted lips; the pack records that rest gap, and a closed command
    drawn by the baseline renderer reads as sealed lips to the landmarker (<= 0.03 eye distance),
    on her and on another portrait."""
    from presenter.offline.judge import SEALED_MAX

    gaps = load_pack(astronaut_pack).manifest["lip_gap"]
    assert gaps["rest"] > 2 * SEALED_MAX, gaps              # her own photo: lips apart, teeth showing
    assert gaps["sealed"] <= SEALED_MAX, gaps
    src = tmp_path / "hopper.png"
    cv2.imwrite(str(src), hopper[..., ::-1])
    assert main(["avatar", "create", "--image", str(src), "-o", str(tmp_path / "hopper")]) == 0
    assert load_pack(tmp_path / "hopper").manifest["lip_gap"]["sealed"] <= SEALED_MAX


@pytest.mark.parametrize("size", [128, 256])
def test_guidance_overlaps_detected_face(astronaut_pack: Path, size: int) -> None:
    """The pack's mesh guidance, drawn over its crops, covers the face that the landmarker finds
    independently in those crops: IoU >= 0.8 with the filled face oval, on frames across the loop."""
    pack = load_pack(astronaut_pack)
    ious = []
    with FaceLandmarker("image") as lm:
        for i in range(0, pack.n_frames, 20):
            crop = pack.crops[size]["crops"][i]
            verts = warp_points(pack.face["verts_px"][i], pack.face[f"align_{size}"][i])
            g = render_guidance(verts, size)
            # Detect on an upscaled copy: the landmarker's detector wants faces over ~100 px.
            up = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_CUBIC)
            faces = lm.detect(up)
            assert faces, f"landmarker finds no face in crop {i} at {size} px"
            oval = np.round(faces[0].landmarks[list(FACE_OVAL), :2] * size / 512 * 16).astype(np.int32)
            detected = np.zeros((size, size), np.uint8)
            cv2.fillPoly(detected, [oval], 1, shift=4)
            ious.append(_iou(g[..., 3] > 0.5, detected > 0))
    assert min(ious) >= GUIDANCE_IOU, ious


def test_idle_loop_is_seamless_and_alive(astronaut_pack: Path) -> None:
    """The jump from the last frame to the first is no bigger than an ordinary step, the head moves,
    and the eyes close during a blink."""
    pack = load_pack(astronaut_pack)
    f = pack.frames.astype(np.int16)
    steps = np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))
    wrap = np.abs(f[0] - f[-1]).mean()
    assert wrap <= 1.5 * np.percentile(steps, 90), (wrap, np.percentile(steps, 90))
    nose = pack.face["verts_px"][:, 1, :2]
    assert np.ptp(nose[:, 0]) > 1.0, "head sways by more than a pixel"
    canon = pack.face["canon"]
    eye = canon[:, 159, 1] - canon[:, 145, 1]
    assert eye.min() < 0.3 * eye.max(), "a blink closes the eye"


def test_video_pack_from_the_idle_loop(astronaut_pack: Path, tmp_path: Path) -> None:
    """A video of the person makes a pack whose loop point is chosen where the video comes back to its start."""
    import av

    pack = load_pack(astronaut_pack)
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 512, 512, "yuv420p"
        s.options = {"crf": "12"}
        # 1.6 loops of the idle animation: the best loop point is near the end of the first loop.
        for i in range(160):
            for pkt in s.encode(av.VideoFrame.from_ndarray(pack.frames[i % 100], format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    out = create_from_video(video, tmp_path / "vpack")
    vp = load_pack(out)
    assert abs(vp.n_frames - 100) <= 3, vp.n_frames
    assert vp.manifest["source"]["kind"] == "video"


def _write(path: Path, img: np.ndarray) -> Path:
    cv2.imwrite(str(path), img[..., ::-1])
    return path


def _cli_error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    assert main(list(argv)) == 2
    return capsys.readouterr().err


def test_bad_inputs_fail_cleanly(tmp_path: Path, astronaut: np.ndarray, astronaut_pack: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    """Each bad input exits with code 2 and a message naming the problem, leaving no pack behind."""
    blank = _write(tmp_path / "blank.png", np.full((300, 300, 3), 200, np.uint8))
    tiny = _write(tmp_path / "tiny.png", cv2.resize(astronaut, (160, 160)))  # face ~28 px wide
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    audio = tmp_path / "speech.wav"
    import wave
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\0" * 16000)
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(2000))
    cases = [
        (["--image", str(blank)], "no face"),
        (["--image", str(tiny)], "px wide"),
        (["--image", str(text)], "cannot read"),
        (["--image", str(tmp_path / "missing.jpg")], "does not exist"),
        (["--video", str(audio)], "no video stream"),
        (["--video", str(corrupt)], "cannot decode"),
    ]
    for args, msg in cases:
        out = tmp_path / "out"
        err = _cli_error(capsys, "avatar", "create", *args, "-o", str(out))
        assert msg in err, (args, err)
        assert not out.exists() and not list(tmp_path.glob(".out*")), f"half-written output for {args}"
    err = _cli_error(capsys, "avatar", "create", "--image", str(blank), "-o", str(astronaut_pack))
    assert "already exists" in err
    assert json.loads((astronaut_pack / "manifest.json").read_text())["format"] == "presenter-avatar"


def test_two_faces_take_the_largest(tmp_path: Path, astronaut: np.ndarray, hopper: np.ndarray,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """A photo with two people makes a pack of the larger face and says so."""
    small = cv2.resize(hopper, (200, round(200 * hopper.shape[0] / hopper.shape[1])))  # its face: smaller
    canvas = np.full((512, 800, 3), 230, np.uint8)
    canvas[:, :512] = astronaut
    canvas[100:100 + small.shape[0], 530:530 + small.shape[1]] = small
    src = _write(tmp_path / "two.png", canvas)
    from presenter.avatar.create import create_from_image
    from presenter.avatar.idle import IdleMotion

    with caplog.at_level("WARNING"):
        out = create_from_image(src, tmp_path / "two", motion=IdleMotion(seconds=1.0))
    assert "found 2 faces, using the largest" in caplog.text
    nose_x = load_pack(out).face["verts_px"][0, 1, 0]
    assert nose_x < 512 * 640 / 800, "the astronaut (left, larger) was chosen"
