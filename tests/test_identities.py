"""Identities from the face GAN: usable faces only, rejected for the stated reason, deterministic, resumable."""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest

import presenter.data.identities as identities
from presenter.cli import main
from presenter.data.facegan import latent_z
from presenter.data.identities import (Candidate, Pipeline, Thresholds, generate_identities, identity_id,
                                       image_sha256, load_identity_images, load_index, split_of)
from presenter.errors import UserError
from presenter.face.canonical import LEFT_EYE_LOWER, LEFT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER

SEED = 7          # candidates 0, 1, 2 are usable, 3 is turned away (yaw about -25 deg), 4 is usable
PROFILE = 3


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with Pipeline() as p:
        yield p


@pytest.fixture(scope="module")
def frontal(pipeline: Pipeline) -> Candidate:
    c = pipeline.candidate(SEED, 1)
    assert c.assessment.reason is None, c.assessment.detail
    return c


@pytest.fixture(scope="module")
def run_a(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ids") / "a"
    generate_identities(out, count=2, seed=SEED, pipeline=pipeline)
    return out


def _folder_state(d: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(d.iterdir())}


def test_turned_face_is_rejected_for_head_pose(pipeline: Pipeline) -> None:
    """A generated face turned beyond 20 deg of yaw is turned away as head_pose, with the angle."""
    a = pipeline.candidate(SEED, PROFILE).assessment
    assert a.reason == "head_pose", a.detail
    assert abs(a.measures["yaw_deg"]) > pipeline.thresholds.max_yaw_deg
    assert "yaw" in a.detail


def test_mirror_negates_yaw(pipeline: Pipeline) -> None:
    """Head pose from the transformation matrix: a mirrored face has the opposite yaw."""
    a = pipeline.candidate(SEED, PROFILE)
    b, _ = pipeline.observe(np.ascontiguousarray(a.image[:, ::-1]))
    assert b.measures["yaw_deg"] == pytest.approx(-a.assessment.measures["yaw_deg"], abs=3.0)


def test_small_face_is_rejected_as_small(pipeline: Pipeline, frontal: Candidate) -> None:
    """The same usable face shrunk to a third of the frame is rejected as small_face."""
    canvas = np.full_like(frontal.image, 128)
    canvas[166:346, 166:346] = cv2.resize(frontal.image, (180, 180), interpolation=cv2.INTER_AREA)
    a, desc = pipeline.observe(canvas)
    assert a.reason == "small_face", a.detail
    assert a.measures["face_fraction"] < pipeline.thresholds.min_face_fraction and desc is None


def test_closed_eyes_are_rejected(pipeline: Pipeline, frontal: Candidate) -> None:
    """Eyes painted shut (skin over the eye, a lash line along the lower lid) are rejected as eyes_closed."""
    img = frontal.image.copy()
    lm = frontal.assessment.face.landmarks
    for upper, lower in ((LEFT_EYE_UPPER, LEFT_EYE_LOWER), (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)):
        pts = np.concatenate([lm[list(upper), :2], lm[list(lower)[::-1], :2]])
        centre = pts.mean(0)
        lid = (pts - centre) * (1.3, 2.0) + centre
        h = np.ptp(pts[:, 1]) * 2.0
        skin = np.median(img[int(centre[1] - 0.8 * h):int(centre[1] - 0.5 * h),
                             int(pts[:, 0].min()):int(pts[:, 0].max())].reshape(-1, 3), 0)
        cv2.fillPoly(img, [cv2.convexHull(lid.astype(np.int32))], skin.tolist())
        cv2.polylines(img, [lm[list(lower), :2].astype(np.int32)], False, (50, 35, 35), 2, cv2.LINE_AA)
    a, _ = pipeline.observe(cv2.GaussianBlur(img, (5, 5), 0))
    assert a.reason == "eyes_closed", a.detail
    assert a.measures["eye_opening"] < pipeline.thresholds.min_eye_opening


def test_two_faces_are_rejected(pipeline: Pipeline, frontal: Candidate) -> None:
    """Two faces side by side are rejected as several_faces, before any size check."""
    other = pipeline.candidate(SEED, 2).image
    pair = np.concatenate([cv2.resize(frontal.image, (256, 256)), cv2.resize(other, (256, 256))], 1)
    grey = np.full((128, 512, 3), 128, np.uint8)
    a, _ = pipeline.observe(np.concatenate([grey, pair, grey], 0))
    assert a.reason == "several_faces", a.detail


def test_blurred_away_face_is_not_found(pipeline: Pipeline, frontal: Candidate) -> None:
    """A face blurred past recognition is rejected as no_face."""
    a, _ = pipeline.observe(cv2.GaussianBlur(frontal.image, (0, 0), 30))
    assert a.reason == "no_face" and a.face is None


def test_near_duplicates_are_dropped_with_their_distance(pipeline: Pipeline, tmp_path: Path) -> None:
    """With a duplicate distance no pair of faces can exceed, every face after the first is a near_duplicate
    of it, and the index says how close it was."""
    thr = dataclasses.replace(Thresholds(), duplicate_distance=2.0)
    p = copy.copy(pipeline)
    p.thresholds = thr
    index = generate_identities(tmp_path / "dup", count=2, seed=SEED, thresholds=thr, max_candidates=3, pipeline=p)
    assert [r["id"] for r in index["identities"]] == [identity_id(SEED, 0)]
    dups = [r for r in index["rejected"] if r["reason"] == "near_duplicate"]
    assert [r["index"] for r in dups] == [1, 2]
    assert all(identity_id(SEED, 0) in r["detail"] for r in dups)


def test_mirror_image_is_within_duplicate_distance(pipeline: Pipeline, frontal: Candidate) -> None:
    """dlib's descriptor puts a face and its mirror image inside the default duplicate distance."""
    _, mirrored = pipeline.observe(np.ascontiguousarray(frontal.image[:, ::-1]))
    assert pipeline.encoder.distance(mirrored, frontal.descriptor) < Thresholds().duplicate_distance


def test_identity_folder_is_complete(run_a: Path) -> None:
    """Each kept identity has its image, crops, fitted mesh in the written image's pixels, z, w and metadata."""
    index = load_index(run_a)
    assert [r["id"] for r in index["identities"]] == [identity_id(SEED, 0), identity_id(SEED, 1)]
    for r in index["identities"]:
        d = run_a / r["id"]
        face = cv2.imread(str(d / "face.png"))
        assert face.shape == (512, 512, 3)
        assert cv2.imread(str(d / "crop_128.png")).shape == (128, 128, 3)
        assert cv2.imread(str(d / "crop_256.png")).shape == (256, 256, 3)
        with np.load(d / "face.npz") as z:
            assert z["verts_px"].shape == (468, 3) and z["canon"].shape == (468, 3)
            assert z["z"].shape == (512,) and z["w"].shape == (512,) and z["descriptor"].shape == (128,)
            np.testing.assert_array_equal(z["z"], latent_z(SEED, r["index"]))
            # The mesh lies on the written image: its x, y span the face inside the 512 px frame.
            assert 0 < z["verts_px"][:, 0].min() < z["verts_px"][:, 0].max() < 512
            assert z["verts_256"].shape == (468, 3) and z["align_256"].shape == (2, 3)
        meta = json.loads((d / "meta.json").read_text())
        assert meta["split"] == r["split"] == split_of(r["id"])
        assert meta["image_sha256"] == image_sha256(face[..., ::-1])
        assert "non-commercial" in meta["lineage"]
    images = load_identity_images(run_a)                       # what `presenter data synth` reads
    assert sorted(i for items in images.values() for i, _ in items) == [identity_id(SEED, 0), identity_id(SEED, 1)]
    assert all(img.shape == (512, 512, 3) for items in images.values() for _, img in items)


def test_same_seed_gives_same_identities(pipeline: Pipeline, run_a: Path, tmp_path: Path) -> None:
    """A second run with the same seed writes the same identities: same z, w, pixels and index."""
    generate_identities(tmp_path / "b", count=2, seed=SEED, pipeline=pipeline)
    a, b = load_index(run_a), load_index(tmp_path / "b")
    assert a == b
    for r in a["identities"]:
        za, zb = np.load(run_a / r["id"] / "face.npz"), np.load(tmp_path / "b" / r["id"] / "face.npz")
        np.testing.assert_array_equal(za["z"], zb["z"])
        np.testing.assert_array_equal(za["w"], zb["w"])
        ma = json.loads((run_a / r["id"] / "meta.json").read_text())
        mb = json.loads((tmp_path / "b" / r["id"] / "meta.json").read_text())
        assert ma["image_sha256"] == mb["image_sha256"]


def test_other_seed_gives_other_identities(pipeline: Pipeline) -> None:
    """Seeds are separate candidate streams."""
    assert not np.allclose(latent_z(SEED, 0), latent_z(SEED + 1, 0))
    assert np.array_equal(latent_z(SEED, 5), latent_z(SEED, 5))


def test_resume_keeps_done_identities(pipeline: Pipeline, run_a: Path, tmp_path: Path) -> None:
    """Asking the same folder for more identities keeps the finished ones untouched and continues the stream."""
    c = tmp_path / "c"
    shutil.copytree(run_a, c)
    before = _folder_state(c)
    index = generate_identities(c, count=4, seed=SEED, pipeline=pipeline)
    after = _folder_state(c)
    for name in (identity_id(SEED, 0), identity_id(SEED, 1)):
        assert after[name] == before[name]
    assert [r["index"] for r in index["identities"]] == [0, 1, 2, 4]
    assert [(r["index"], r["reason"]) for r in index["rejected"]] == [(PROFILE, "head_pose")]
    assert index["next_index"] == 5
    assert generate_identities(c, count=4, seed=SEED, pipeline=pipeline) == index   # nothing left to do


def test_interrupted_write_leaves_nothing_half_done(pipeline: Pipeline, run_a: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while an identity is written leaves no partial folder and an index that resumes cleanly."""
    d = tmp_path / "d"
    shutil.copytree(run_a, d)
    real = identities._write_png

    def failing(path: Path, rgb: np.ndarray) -> None:
        if path.name == "crop_256.png":
            raise OSError("disk full (test)")
        real(path, rgb)

    monkeypatch.setattr(identities, "_write_png", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_identities(d, count=3, seed=SEED, pipeline=pipeline)
    assert not (d / identity_id(SEED, 2)).exists()
    assert not list(d.glob(".*.tmp"))
    assert load_index(d)["next_index"] == 2
    monkeypatch.setattr(identities, "_write_png", real)
    index = generate_identities(d, count=3, seed=SEED, pipeline=pipeline)
    assert [r["index"] for r in index["identities"]] == [0, 1, 2]
    assert (d / identity_id(SEED, 2) / "meta.json").is_file()


def test_resume_with_other_settings_is_refused(pipeline: Pipeline, run_a: Path) -> None:
    """A folder made with one seed is not silently extended with another."""
    with pytest.raises(UserError, match="other settings"):
        generate_identities(run_a, count=3, seed=SEED + 1)


def test_splits_are_by_identity_and_stable() -> None:
    """train/val/test come from a hash of the id: about 80/10/10 and the same every time."""
    ids = [identity_id(0, i) for i in range(5000)]
    counts = Counter(split_of(i) for i in ids)
    assert abs(counts["train"] / 5000 - 0.8) < 0.03
    assert abs(counts["val"] / 5000 - 0.1) < 0.02 and abs(counts["test"] / 5000 - 0.1) < 0.02
    assert [split_of(i) for i in ids[:50]] == [split_of(i) for i in ids[:50]]


def test_cli_generates_and_dry_run_writes_nothing(tmp_path: Path) -> None:
    """`presenter data identities` works from the command line; --dry-run only prints."""
    assert main(["data", "identities", "-o", str(tmp_path / "dry"), "--count", "1", "--dry-run"]) == 0
    assert not (tmp_path / "dry").exists()
    assert main(["data", "identities", "-o", str(tmp_path / "cli"), "--count", "1", "--seed", str(SEED)]) == 0
    assert load_index(tmp_path / "cli")["identities"][0]["id"] == identity_id(SEED, 0)
    assert main(["data", "identities", "-o", str(tmp_path / "bad"), "--count", "0"]) == 2


def test_own_photos_become_identities_in_the_same_format(tmp_path: Path, astronaut: np.ndarray,
                                                         hopper: np.ndarray) -> None:
    """Photos go through the same checks into the same folder format; a photo without a face is rejected."""
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.png"), astronaut[..., ::-1])
    cv2.imwrite(str(photos / "hopper.jpg"), hopper[..., ::-1])
    cv2.imwrite(str(photos / "wall.png"), np.full((300, 400, 3), 90, np.uint8))
    assert main(["data", "identities", "-o", str(tmp_path / "own"), "--images", str(photos),
                 "--attribution", "public-domain portraits (NASA, US Navy)"]) == 0
    index = load_index(tmp_path / "own")
    assert sorted(r["file"] for r in index["identities"]) == ["astronaut.png", "hopper.jpg"]
    assert [(r["file"], r["reason"]) for r in index["rejected"]] == [("wall.png", "no_face")]
    for r in index["identities"]:
        d = tmp_path / "own" / r["id"]
        assert cv2.imread(str(d / "face.png")).shape == (512, 512, 3)
        assert cv2.imread(str(d / "crop_256.png")).shape == (256, 256, 3)
        meta = json.loads((d / "meta.json").read_text())
        assert meta["attribution"] == "public-domain portraits (NASA, US Navy)" and meta["split"] == split_of(r["id"])
