"""Mouth prior: the regression finds a planted direction, edits land where asked, the export is complete."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from presenter.data.identities import Pipeline, generate_identities, identities_of
from presenter.data.mouth_prior import (PriorOptions, Usable, fit_direction, load_direction,
                                        run_mouth_prior, summarise)

D = 64            # any latent width works; small keeps the test fast
SEED = 8          # its candidate 1 falls in the test split


def _planted(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random w with an opening along u, a yaw along v (v shares part of u), pitch, eyes and smile, plus noise."""
    rng = np.random.default_rng(seed)
    u, v, p, e, s = (x / np.linalg.norm(x) for x in rng.standard_normal((5, D)))
    v = 0.6 * u + 0.8 * v
    w_avg = rng.standard_normal(D).astype(np.float32)
    w = (w_avg + rng.standard_normal((n, D))).astype(np.float32)
    x = w - w_avg
    targets = np.stack([0.4 * x @ u + 0.02 * rng.standard_normal(n), 10 * x @ v, 5 * x @ p, 0.05 * x @ e,
                        0.3 * x @ s], 1)
    return w, targets.astype(np.float32), w_avg, np.stack([u, v])


def test_direction_recovers_planted_opening_without_yaw() -> None:
    """The fitted direction is the planted opening direction with the yaw direction projected out."""
    w, targets, w_avg, (u, v) = _planted()
    dr = fit_direction(w, targets, w_avg)
    u_perp = u - (u @ v) * v
    u_perp /= np.linalg.norm(u_perp)
    assert abs(float(dr.d @ v)) < 0.05                      # moving along d hardly turns the head
    assert float(dr.d @ u_perp) > 0.9                        # and still opens the mouth
    assert float(dr.d_raw @ u) > 0.9 and dr.cos_nuisance["yaw_deg"] > 0.3
    assert dr.r2_cv > 0.8 and dr.slope_cm > 0


def test_move_lands_on_the_asked_position() -> None:
    """An edit to position t puts w exactly at t and changes it only along the direction."""
    w, targets, w_avg, _ = _planted(n=100)
    dr = fit_direction(w, targets, w_avg)
    for t in (-3.0, 0.0, 2.5):
        moved = dr.move(w[0], t)
        assert float(dr.position(moved)) == pytest.approx(t, abs=1e-4)
        step = moved - w[0]
        assert np.linalg.norm(step - (step @ dr.d) * dr.d) < 1e-3 * max(1.0, float(np.linalg.norm(step)))


def test_usable_range_is_the_run_of_passing_positions() -> None:
    """Positions whose identity distance breaks the limit end the usable range; sealing is found inside it."""
    positions = np.arange(-4.0, 6.01, 1.0, dtype=np.float32)
    n = 20
    alpha = positions[None, :] - np.zeros((n, 1), np.float32)
    res = {
        "positions": positions, "alpha": alpha, "p0": np.zeros(n, np.float32),
        "found": np.ones((n, len(positions)), bool), "eyes_open": np.ones((n, len(positions)), bool),
        "opening_cm": np.clip(0.3 * alpha + 0.5, 0.0, None).astype(np.float32),
        "id_distance": (0.08 * np.abs(alpha)).astype(np.float32),          # 0.35 is crossed beyond |t| = 4.375
        "yaw_drift": np.zeros_like(alpha), "pitch_drift": np.zeros_like(alpha),
        "blink": np.full_like(alpha, 0.1), "eye_opening": np.full_like(alpha, 0.2),
        "smile": np.full_like(alpha, 0.3), "jaw_open": np.clip(0.1 * alpha, 0, 1),
    }
    s = summarise(res, Usable())
    assert s["usable_range"] == [-4.0, 4.0]
    assert s["sealed_at"] == -2.0                  # opening 0.3 t + 0.5 falls under SEALED_CM from t = -2 down
    assert s["positions"][2]["sealed"] == 1.0 and s["positions"][3]["sealed"] == 0.0
    res["id_distance"][:, 7] = 0.5                                       # t = 3 breaks identity
    assert summarise(res, Usable())["usable_range"] == [-4.0, 2.0]


@pytest.fixture(scope="module")
def pipeline() -> Iterator[Pipeline]:
    with Pipeline() as p:
        yield p


def test_export_is_complete_and_resumable(pipeline: Pipeline, tmp_path: Path) -> None:
    """End to end on two of three identities: direction, evaluation on the test identity, one graded
    sequence per identity with meshes and crops, the comparison and the grid; a rerun rewrites nothing."""
    ids_dir, out = tmp_path / "ids", tmp_path / "prior"
    generate_identities(ids_dir, count=3, seed=SEED, pipeline=pipeline)
    assert identities_of(ids_dir, "test"), "seed 8 should give a test identity among its first three"
    lenient = Usable(max_mean_id_distance=2.0, min_same_person=0.0, max_median_pose_drift_deg=90.0,
                     min_eyes_open=0.0, min_found=0.0)
    opts = PriorOptions(n_samples=6, n_eval=1, steps=3, limit=2, eval_positions=(-1.0, 1.0), usable=lenient)
    summary = run_mouth_prior(ids_dir, out, opts, pipeline=pipeline)
    assert summary["usable_range"] == [-1.0, 1.0]
    positions = summary["sequence_positions"]
    assert len(positions) == 3 and positions[-1] == 1.0 and positions[0] in (-1.0, 0.0)
    assert load_direction(out / "direction.npz").n_samples == 6
    evaluation = json.loads((out / "evaluation.json").read_text())
    row = evaluation["positions"][0]
    for key in ("opening_cm_median", "sealed", "id_distance_mean", "yaw_drift_median_abs", "eyes_open"):
        assert key in row
    index = json.loads((out / "sequences" / "index.json").read_text())
    assert [s["id"] for s in index["sequences"]] == identities_of(ids_dir)[:2]
    for ident in identities_of(ids_dir)[:2]:
        with np.load(out / "sequences" / ident / "seq.npz") as z:
            assert z["t"].tolist() == positions
            assert z["verts_px"].shape == (3, 468, 3) and z["canon"].shape == (3, 468, 3)
            assert z["crops_256"].shape == (3, 256, 256, 3) and z["crops_128"].shape == (3, 128, 128, 3)
            assert z["found"].all() and np.isfinite(z["id_distance"]).all()
        assert len(list((out / "sequences" / ident).glob("frame_*.jpg"))) == 3
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["n_frames"] == 2 and comparison["gan_mouth_sharpness_median"] > 0
    assert comparison["baseline_opening_error_cm_median"] is not None
    assert (out / "grid.png").stat().st_size > 0
    before = {p: p.stat().st_mtime_ns for p in (out / "sequences").rglob("*") if p.is_file() and p.suffix != ".json"}
    run_mouth_prior(ids_dir, out, opts, pipeline=pipeline)
    after = {p: p.stat().st_mtime_ns for p in before}
    assert after == before

    # The corpus grows; a test-only export adds the new test identity and keeps the train entry listed.
    generate_identities(ids_dir, count=5, seed=SEED, pipeline=pipeline)
    new_test = [i for i in identities_of(ids_dir, "test") if i not in identities_of(ids_dir)[:2]]
    assert new_test, "seed 8 should give a second test identity among its first five"
    run_mouth_prior(ids_dir, out, dataclasses.replace(opts, splits=("test",), limit=None), pipeline=pipeline)
    index = json.loads((out / "sequences" / "index.json").read_text())
    assert [s["id"] for s in index["sequences"]] == identities_of(ids_dir)[:2] + new_test
    assert {p: p.stat().st_mtime_ns for p in before} == before
    exported = {d.name for d in (out / "sequences").iterdir() if d.is_dir()}
    assert exported == set(identities_of(ids_dir)[:2] + new_test)
