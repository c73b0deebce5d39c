"""The invisible watermark: its payload survives what happens to a video, it is not seen where it
was never put, the live path's frames carry it, and `presenter verify` says so with its exit code.
Measurements over many images (rates, PSNR, cost) are in docs/watermark.md."""
from __future__ import annotations

import io
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from presenter.stream.frames import IdleFrames, draw_label, to_yuv420
from presenter.watermark import Payload, Watermark, detect, new_payload, verify_file

RUN_ID = 0x5EC0DE42


@pytest.fixture(scope="module")
def mark() -> Watermark:
    return Watermark(new_payload(RUN_ID))


def luma(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def unmarked_images(n: int) -> list[np.ndarray]:
    """n real RGB images, none marked: scikit-image's photos, resized, cropped, flipped and
    JPEG-compressed at random (a fixed seed)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(),
              np.stack([data.camera()] * 3, -1), data.immunohistochemistry(), data.cat()]
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        s = rng.uniform(0.5, 1.3)
        im = cv2.resize(im, (round(im.shape[1] * s), round(im.shape[0] * s)), interpolation=cv2.INTER_AREA)
        h, w = im.shape[:2]
        ch, cw = rng.integers(min(160, h), h + 1), rng.integers(min(160, w), w + 1)
        y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        im = np.ascontiguousarray(im[y0:y0 + ch, x0:x0 + cw][:, ::(-1 if i % 2 else 1)])
        ok, buf = cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])
        out.append(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    return out


def h264_clip(frames: list[np.ndarray], crf: int) -> bytes:
    """RGB frames -> an MP4 (libx264, yuv420p, 25 fps) at crf."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.options = {"crf": str(crf), "preset": "veryfast"}
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


def test_payload_bits_round_trip_and_crc_rejects_a_flipped_bit() -> None:
    """64 bits hold version and id; one flipped bit fails the CRC."""
    p = Payload("0.1.0", RUN_ID)
    bits = p.bits()
    assert bits.shape == (64,)
    assert Payload.from_bits(bits) == p
    bits[20] ^= 1
    assert Payload.from_bits(bits) is None


def test_clean_frame_gives_back_its_payload_at_40db(astronaut: np.ndarray, mark: Watermark) -> None:
    """A marked frame decodes to the presenter version and the run id; the mark costs < 1/10^4 of the
    signal power (PSNR >= 40 dB)."""
    marked = mark.mark_rgb(astronaut)
    assert cv2.PSNR(astronaut, marked) >= 40.0
    d = detect(luma(marked))
    assert d.found and d.payload == new_payload(RUN_ID)
    assert d.confidence > 0.999999
    assert d.scale == (1.0, 1.0)


def talking(rgb: np.ndarray, i: int) -> np.ndarray:
    """Frame i of a stand-in talking head: a dark mouth opening and closing (4 frames a cycle)."""
    out = rgb.copy()
    cv2.ellipse(out, (245, 200), (22, 2 + 6 * (i % 4)), 0, 0, 360, (60, 20, 30), -1, cv2.LINE_AA)
    return out


@pytest.mark.parametrize("motion", ["talking", "pan"])
def test_survives_h264_crf28_reencode_of_a_clip(astronaut: np.ndarray, mark: Watermark, tmp_path: Path,
                                                motion: str) -> None:
    """A 1 s clip of marked frames, re-encoded with libx264 at CRF 28, still verifies: a talking head
    in nearly every frame; a whole-frame pan of 3 px a frame (the codec smears the mark in
    P-frames) through its clearest frames."""
    if motion == "talking":
        frames = [mark.mark_rgb(talking(astronaut, i)) for i in range(25)]
    else:
        frames = [mark.mark_rgb(np.roll(astronaut, 3 * i, axis=1)) for i in range(25)]
    path = tmp_path / "clip.mp4"
    path.write_bytes(h264_clip(frames, 28))
    d = verify_file(path)
    assert d.found and d.payload is not None and d.payload.run_id == RUN_ID
    assert d.frames == 25 and d.frames_found >= (20 if motion == "talking" else 1)


@pytest.mark.parametrize("attack", ["downscale_50", "crop_10"])
def test_survives_downscale_and_crop(astronaut: np.ndarray, mark: Watermark, attack: str) -> None:
    """Half size (INTER_AREA) or 90 % of each side kept at an odd offset: the scale and shift are found."""
    marked = mark.mark_rgb(astronaut)
    if attack == "downscale_50":
        seen = cv2.resize(marked, (256, 256), interpolation=cv2.INTER_AREA)
    else:
        seen = marked[15:15 + 461, 37:37 + 461]
    d = detect(luma(seen))
    assert d.found and d.payload is not None and d.payload.run_id == RUN_ID
    if attack == "downscale_50":
        assert d.scale == pytest.approx((0.5, 0.5), abs=0.01)


def test_not_found_on_unmarked_images() -> None:
    """Three dozen real, augmented, unmarked images: no mark found in any."""
    found = [i for i, im in enumerate(unmarked_images(36)) if detect(luma(im)).found]
    assert found == []


class StillRenderer:
    """A stand-in renderer: the astronaut, shifted a little per idle frame (no face work)."""
    name = "still"
    synthetic_label = "SYNTHETIC test"

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb

    def render(self, index: int, mouth: np.ndarray | None) -> np.ndarray:
        return np.roll(self.rgb, index, axis=0)


def test_live_idle_and_composed_frames_carry_the_runs_mark(astronaut: np.ndarray) -> None:
    """`IdleFrames` (the live path) marks the idle loop and every composed frame with one run id."""
    idle = IdleFrames(StillRenderer(astronaut), 4, ["SYNTHETIC"])
    h = astronaut.shape[0]
    for yuv in (idle.yuv(1), idle.compose(astronaut)):
        d = detect(yuv[:h])
        assert d.found and d.payload == idle.watermark.payload
    labelled = to_yuv420(draw_label(astronaut, ["SYNTHETIC"]))
    assert cv2.PSNR(labelled[:h], idle.compose(astronaut)[:h]) >= 40.0


def test_verify_exit_codes(astronaut: np.ndarray, mark: Watermark, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """`presenter verify`: 0 and the payload when found, 1 when not, 2 for unreadable or missing files."""
    from presenter.cli import main

    marked, plain, junk = tmp_path / "marked.png", tmp_path / "plain.png", tmp_path / "junk.mp4"
    cv2.imwrite(str(marked), mark.mark_rgb(astronaut)[..., ::-1])
    cv2.imwrite(str(plain), astronaut[..., ::-1])
    junk.write_bytes(b"\x00not a video" * 100)
    assert main(["verify", str(marked)]) == 0
    assert f"found: presenter 0.1.0, run id {RUN_ID:08x}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["verify", str(plain)])
    assert e.value.code == 1 and "not found" in capsys.readouterr().out
    assert main(["verify", str(junk)]) == 2
    assert "not an image or a video that can be decoded" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "missing.png")]) == 2


def test_verify_runs_on_a_base_install(astronaut: np.ndarray, mark: Watermark, tmp_path: Path) -> None:
    """`presenter verify` needs no extra (torch, aiortc, ...): it runs with them hidden."""
    from test_install import presenter_without_extras

    path = tmp_path / "marked.png"
    cv2.imwrite(str(path), mark.mark_rgb(astronaut)[..., ::-1])
    r = presenter_without_extras("verify", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"run id {RUN_ID:08x}" in r.stdout
