"""The talking-clip renderer follows its command, and real-video ingestion round-trips a rendered clip."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from presenter.data.corpus import load_clip, read_index, write_talking_video
from presenter.data.prepare import prepare
from presenter.data.render import prepare_still, render_clip
from presenter.face.fit import fit_points, mouth_opening_cm
from presenter.face.landmarker import FaceLandmarker
from presenter.motion.mouth import CLOSE, JAW, TEETH

T = 75


def _command() -> np.ndarray:
    t = np.arange(T) / 25
    p = np.zeros((T, 6), np.float32)
    p[:, JAW] = np.clip(np.sin(2 * np.pi * 1.3 * t), 0, 1) * 0.8
    p[:, TEETH] = 0.8
    return p


@pytest.fixture(scope="module")
def rendered(hopper: np.ndarray) -> tuple[np.ndarray, dict, np.ndarray]:
    """A 3 s clip of a held-out identity (Hopper) with a jaw command that opens and rests."""
    with FaceLandmarker("image") as lm:
        still = prepare_still(hopper, lm)
    assert still is not None
    p = _command()
    frames, face = render_clip(still, p, np.random.default_rng(1))
    return frames, face, p


def test_landmarker_measured_opening_follows_the_command(rendered) -> None:
    """The landmarker, run on the rendered frames, measures an inner-lip opening that correlates
    >= 0.9 with the commanded jaw opening (the renderer's honesty check)."""
    frames, _, p = rendered
    measured = []
    with FaceLandmarker("image") as lm:
        for f in frames:
            faces = lm.detect(cv2.resize(f, (512, 512)))
            assert faces, "the rendered face is still a face"
            measured.append(mouth_opening_cm(fit_points(faces[0].landmarks, faces[0].matrix).canon))
    r = np.corrcoef(measured, p[:, JAW])[0, 1]
    assert r >= 0.9, r


def test_rest_is_sealed_and_bilabial_close_seals(hopper: np.ndarray) -> None:
    """Rest (all params 0) is a closed mouth even for a photo with parted lips; jaw + close stays sealed."""
    with FaceLandmarker("image") as lm:
        still = prepare_still(hopper, lm)
    p = np.zeros((2, 6), np.float32)
    p[1, JAW], p[1, CLOSE] = 0.4, 1.0
    _, face = render_clip(still, p, np.random.default_rng(0))
    assert (mouth_opening_cm(face["canon"]) < 0.1).all()


def test_prepare_round_trips_a_rendered_clip(rendered, tmp_path: Path) -> None:
    """A rendered clip written as mp4 with audio comes back through `prepare` with the same length,
    audio aligned to video (envelope cross-correlation peaks at lag 0), and a fitted mouth opening
    that follows the command (r >= 0.9); a corrupt file and an audio-less video are skipped with reasons."""
    frames, _, p = rendered
    big = np.stack([cv2.resize(f, (384, 384)) for f in frames])
    env = np.repeat(p[:, JAW], 640)
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(T * 640) / 16000) * env).astype(np.float32)
    src = tmp_path / "in"
    src.mkdir()
    write_talking_video(src / "talk.mp4", big, audio)
    (src / "broken.mp4").write_bytes(b"garbage" * 100)
    import av
    with av.open(str(src / "silent.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        for _ in range(5):
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    out = tmp_path / "corpus"
    report = prepare(src, out)
    by_name = {Path(e["file"]).name: e for e in report["files"]}
    assert by_name["broken.mp4"]["status"] == "skipped" and "decode" in by_name["broken.mp4"]["reason"]
    assert by_name["silent.mp4"]["status"] == "skipped" and "no audio" in by_name["silent.mp4"]["reason"]
    assert by_name["talk.mp4"]["status"] == "ok"
    index = read_index(out)
    assert len(index["clips"]) == 1
    clip = load_clip(out, index["clips"][0]["id"])
    assert clip.n_frames == T and clip.crops.shape == (T, 256, 256, 3)
    assert abs(len(clip.audio) - T * 640) <= 1
    got = np.abs(clip.audio[: T * 640]).reshape(T, 640).mean(1)
    lags = range(-3, 4)
    xc = [np.corrcoef(np.roll(got, k), p[:, JAW])[0, 1] for k in lags]
    assert list(lags)[int(np.argmax(xc))] == 0, xc
    assert np.corrcoef(mouth_opening_cm(clip.face["canon"]), p[:, JAW])[0, 1] >= 0.9
    # A second run skips what is there and changes nothing.
    before = (out / "clips" / clip.id / "face.npz").stat().st_mtime_ns
    prepare(src, out)
    assert (out / "clips" / clip.id / "face.npz").stat().st_mtime_ns == before
    assert json.loads((out / "prepare_report.json").read_text())["files"]


def test_real_phone_timing_closes_bilabials_and_opens_vowels_in_the_mesh() -> None:
    """espeak phone timings -> viseme params -> deformed mesh: the inner lips are sealed at every
    p/b/m frame and open at least 0.5 cm on average over open-vowel frames."""
    from presenter.data.tts import synthesize
    from presenter.motion.mouth import closed_rest, deform
    from presenter.motion.visemes import phones_to_params
    from presenter.face.canonical import canonical_mesh
    from presenter.train.syncformer_data import bilabial_frames

    utt = synthesize("Bob bought a map for papa.", rate_wpm=150)
    n = int(np.ceil(utt.duration_s * 25))
    params = phones_to_params(utt.phones, n)
    rest = closed_rest(canonical_mesh().vertices)
    opening = np.array([mouth_opening_cm(deform(rest, p)) for p in params])
    bil = bilabial_frames(utt.phones, n)
    t = np.arange(n) / 25
    vowel = np.zeros(n, bool)
    for ph, a, b in utt.phones:
        if ph in ("aa", "ae", "ah", "ao"):
            vowel |= (t >= a) & (t < b)
    assert bil.sum() >= 4 and vowel.sum() >= 3
    assert opening[bil].max() < 0.01
    assert opening[vowel].mean() > 0.5, opening[vowel].mean()
