"""Generator pairs: the mouth window holds the mouth, pairs have the documented layout, and splits stay apart.

The sequence folder is the mouth prior's real format, made fast: two real portraits fitted by the
landmarker, their jaw opened by the mouth model (0 ... 2.2 cm) and the frames warped to match.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from presenter.face.align import (MOUTH_WINDOW_256, align_transform, mouth_window, place_mouth_window, template,
                                  to_mouth_window, warp_points)
from presenter.face.canonical import CHIN, LIPS_OUTER
from presenter.face.masks import SUBNASALE
from presenter.train.generator_data import (CACHE_NAME, GeneratorPairs, describe, identities_by_split,
                                            wide_open_mesh)

K = 4                                    # frames per fake sequence
SPLIT_OF = {"astro": "train", "grace": "test", "astro_cut": "val"}   # astro_cut: the frame ends under the chin


def _fake_sequence(image: np.ndarray, verts_px: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """seq.npz arrays and frames: the portrait with its jaw opened in K steps (the mesh is the command)."""
    from presenter.data.identities import aligned_crops
    from presenter.face.fit import fit_points, mouth_opening_cm, pose_mesh
    from presenter.face.warp import warp_image
    from presenter.motion.mouth import JAW, N_PARAMS, deform

    fitted = fit_points(verts_px * np.array([1.0, 1.0, -1.0]), np.eye(4))
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in ("opening_cm", "align_256", "verts_256", "verts_px",
                                                           "crops_256")}
    frames = []
    for jaw in np.linspace(0.0, 1.0, K):
        params = np.zeros(N_PARAMS, np.float32)
        params[JAW] = jaw
        canon = deform(fitted.canon, params)
        dst = pose_mesh(canon, fitted.rotation, fitted.scale, fitted.translation)
        frame = warp_image(image, verts_px, dst)
        crop256, m = aligned_crops(frame, dst)[256]
        for key, v in (("opening_cm", mouth_opening_cm(canon)), ("align_256", m), ("verts_px", dst),
                       ("verts_256", warp_points(dst, m)), ("crops_256", crop256)):
            arrays[key].append(v)
        frames.append(frame)
    out = {k: np.stack(v) for k, v in arrays.items()}
    out["found"] = np.ones(K, bool)
    out["t"] = np.linspace(-3.0, 6.0, K).astype(np.float32)
    return out, frames


@pytest.fixture(scope="module")
def sequences(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, hopper: np.ndarray) -> Path:
    """A sequences folder in the mouth prior's format: astro (train), grace (test), and in val astro_cut,
    whose frames end 10 px under the sealed chin as many GAN frames do."""
    from presenter.face.fit import fit_face
    from presenter.face.landmarker import FaceLandmarker

    root = tmp_path_factory.mktemp("prior") / "sequences"
    root.mkdir()
    with FaceLandmarker("image") as lm:
        fits = {name: fit_face(lm.detect(image)[0]).verts_px for name, image in (("astro", astronaut),
                                                                                ("grace", hopper))}
        cut = int(fits["astro"][CHIN, 1]) + 10
        for ident, image, verts in (("astro", astronaut, fits["astro"]), ("grace", hopper, fits["grace"]),
                                    ("astro_cut", np.ascontiguousarray(astronaut[:cut]), fits["astro"])):
            seq, frames = _fake_sequence(image, verts)
            (root / ident).mkdir()
            np.savez_compressed(root / ident / "seq.npz", **seq)
            for k, f in enumerate(frames):
                cv2.imwrite(str(root / ident / f"frame_{k:02d}.jpg"), f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    index = {"positions": [], "sequences": [{"id": i, "split": s} for i, s in SPLIT_OF.items()]}
    (root / "index.json").write_text(json.dumps(index))
    return root


def _seq(root: Path, ident: str) -> dict[str, np.ndarray]:
    with np.load(root / ident / "seq.npz") as z:
        return {k: z[k] for k in z.files}


def test_window_holds_lips_and_chin_of_every_frame(sequences: Path) -> None:
    """Outer lips and chin of every frame, sealed to a 2.2 cm jaw drop, lie inside the window with a margin."""
    x0, y0, side = MOUTH_WINDOW_256
    assert template(256)[CHIN, 1] < y0 + side and template(256)[2, 1] > y0          # template chin, subnasale
    for ident in SPLIT_OF:
        v = to_mouth_window(_seq(sequences, ident)["verts_256"])                    # (K, V, 3)
        lips, chin = v[:, list(LIPS_OUTER), :2], v[:, CHIN, :2]
        assert lips.min() >= 8 and lips.max() <= side - 8, (ident, lips.min(), lips.max())
        assert chin[:, 1].max() <= side - 4 and chin[:, 1].max() - chin[:, 1].min() > 15, chin
        assert (chin[:, 0] > 8).all() and (chin[:, 0] < side - 8).all()


def test_window_slices_and_places_back() -> None:
    """mouth_window is the (x0, y0, 128) square; placing it back changes nothing else."""
    crop = np.random.default_rng(0).integers(0, 255, (256, 256, 3), np.uint8)
    x0, y0, side = MOUTH_WINDOW_256
    np.testing.assert_array_equal(mouth_window(crop), crop[y0:y0 + side, x0:x0 + side])
    out = place_mouth_window(crop, np.zeros((side, side, 3), np.uint8))
    assert out[y0:y0 + side, x0:x0 + side].max() == 0
    out[y0:y0 + side, x0:x0 + side] = crop[y0:y0 + side, x0:x0 + side]
    np.testing.assert_array_equal(out, crop)


def test_pairs_have_the_documented_layout(sequences: Path) -> None:
    """Shapes, dtypes and ranges of every key, augmented or not."""
    for augment in (False, True):
        ds = GeneratorPairs(sequences, "train", augment=augment, portrait_share=0.2)
        assert len(ds) == K + 1                                      # one astronaut self-reconstruction
        for i in range(len(ds)):
            item = ds[i]
            shapes = {k: tuple(v.shape) for k, v in item.items()}
            assert shapes == {"target": (3, 128, 128), "guidance": (4, 128, 128), "mask": (1, 128, 128),
                              "reference": (3, 128, 128), "weight": (1, 128, 128)}
            for key, (lo, hi) in {"target": (-1, 1), "reference": (-1, 1), "guidance": (0, 1), "mask": (0, 1),
                                  "weight": (1, 5)}.items():
                v = item[key]
                assert v.dtype.is_floating_point and v.dtype.itemsize == 4
                assert lo <= float(v.min()) and float(v.max()) <= hi, (key, float(v.min()), float(v.max()))
            assert float(item["guidance"][3].mean()) > 0.4                  # the face fills most of the window
            assert float(item["target"].std()) > 0.1


def test_unaugmented_target_is_the_frame_window(sequences: Path) -> None:
    """Without augmentation the target is the frame's window of the 256 px crop (JPEG-level differences)."""
    ds = GeneratorPairs(sequences, "train", augment=False, portrait_share=0.0)
    seq = _seq(sequences, "astro")
    for i in range(len(ds)):
        p = ds.plan(i)
        want = mouth_window(seq["crops_256"][p.target_frame]).astype(np.float32) / 127.5 - 1.0
        got = ds[i]["target"].numpy().transpose(1, 2, 0)
        assert np.abs(got - want).mean() < 0.02


def test_mask_covers_lips_and_dropped_jaw_and_spares_the_border(sequences: Path) -> None:
    """Mask is ~1 on the lips and on the chin of the widest frame, starts under the nose, 0 on the window border."""
    ds = GeneratorPairs(sequences, "train", augment=False, portrait_share=0.0)
    v = to_mouth_window(_seq(sequences, "astro")["verts_256"])
    chin_open = np.round(v[-1, CHIN, :2]).astype(int)
    for i in range(len(ds)):
        mask = ds[i]["mask"][0].numpy()
        lips = np.zeros((128, 128), np.uint8)
        cv2.fillPoly(lips, [np.round(v[ds.plan(i).target_frame, list(LIPS_OUTER), :2]).astype(np.int32)], 1)
        assert mask[lips > 0].min() > 0.95
        assert mask[chin_open[1] - 2, chin_open[0]] > 0.9           # even on the sealed frame
        assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
        sub = v[ds.plan(i).target_frame, SUBNASALE, :2]                # under the nose, window pixels
        top = np.flatnonzero(mask[:, int(round(sub[0]))] > 0.5)[0]     # the masks' hull reaches the nostrils
        assert sub[1] - 10 <= top <= sub[1] + 2, (top, sub)


def test_lips_mask_covers_the_lips_and_not_the_chin(sequences: Path) -> None:
    """With lips_share 1 every pair's mask is > 0.9 on the target's lips, ~0 on its chin, and smaller than the
    lower-face mask of the same pair."""
    lips = GeneratorPairs(sequences, "train", augment=False, portrait_share=0.0, lips_share=1.0)
    lower = GeneratorPairs(sequences, "train", augment=False, portrait_share=0.0)
    v = to_mouth_window(_seq(sequences, "astro")["verts_256"])
    for i in range(len(lips)):
        assert lips.plan(i).lips and not lower.plan(i).lips
        f = lips.plan(i).target_frame
        mask = lips[i]["mask"][0].numpy()
        poly = np.zeros((128, 128), np.uint8)
        cv2.fillPoly(poly, [np.round(v[f, list(LIPS_OUTER), :2]).astype(np.int32)], 1)
        assert mask[poly > 0].min() > 0.9
        chin = np.round(v[f, CHIN, :2]).astype(int)
        assert mask[min(chin[1], 127), chin[0]] < 0.1
        assert mask.sum() < 0.7 * lower[i]["mask"].sum().item()


def test_mask_is_zero_where_the_window_leaves_the_frame(sequences: Path) -> None:
    """Rows under the frame's bottom edge (replicated border in the target) are never painted; rows above are."""
    ds = GeneratorPairs(sequences, "val", augment=False)
    seq = _seq(sequences, "astro_cut")
    height = int(cv2.imread(str(sequences / "astro_cut" / "frame_00.jpg")).shape[0])
    x0, y0, _ = MOUTH_WINDOW_256
    for i in range(len(ds)):
        inv = cv2.invertAffineTransform(seq["align_256"][ds.plan(i).target_frame])
        frame_y = inv[1, 0] * (64 + x0) + inv[1, 1] * (np.arange(128) + y0) + inv[1, 2]   # window column 64
        mask = ds[i]["mask"][0].numpy()
        outside = frame_y > height - 0.5
        assert outside.sum() > 5 and mask[outside, 64].max() == 0
        assert mask[np.flatnonzero(frame_y < height - 8)[-1], 64] > 0.9


def test_weight_is_high_on_the_lips_only(sequences: Path) -> None:
    ds = GeneratorPairs(sequences, "train", augment=False, portrait_share=0.0)
    w = ds[0]["weight"][0].numpy()
    assert w.max() == 5.0 and w.min() == 1.0
    assert 0.05 < (w > 1).mean() < 0.4


def test_mirror_flips_images_and_keeps_u_left_to_right(sequences: Path) -> None:
    """A mirrored pair is the plain pair flipped, with u -> 1 - u on the face; u still grows to the right."""
    ds = GeneratorPairs(sequences, "train", augment=True, portrait_share=0.0)
    p = ds.plan(2)
    plain = ds.render(dataclasses.replace(p, geometry=dataclasses.replace(p.geometry, mirror=False),
                                          reference_geometry=dataclasses.replace(p.geometry, mirror=False)))
    mirr = ds.render(dataclasses.replace(p, geometry=dataclasses.replace(p.geometry, mirror=True),
                                         reference_geometry=dataclasses.replace(p.geometry, mirror=True)))
    for key in ("target", "reference", "mask", "weight"):
        np.testing.assert_array_equal(mirr[key].numpy(), plain[key].numpy()[..., ::-1])
    g, gm = plain["guidance"].numpy(), mirr["guidance"].numpy()
    cov = gm[3] > 0
    np.testing.assert_array_equal(cov, g[3][:, ::-1] > 0)
    np.testing.assert_allclose(gm[0][cov], 1.0 - g[0][:, ::-1][cov], atol=1e-6)
    np.testing.assert_array_equal(gm[1:3], g[1:3][..., ::-1])
    xs = np.broadcast_to(np.arange(128.0), (128, 128))
    for guid in (g, gm):
        c = guid[3] > 0
        assert np.corrcoef(xs[c], guid[0][c])[0, 1] > 0.9


def test_pairs_are_deterministic_per_seed_and_epoch(sequences: Path) -> None:
    a = GeneratorPairs(sequences, "train", seed=3, portrait_share=0.2)
    b = GeneratorPairs(sequences, "train", seed=3, portrait_share=0.2)
    for i in range(len(a)):
        for key, v in a[i].items():
            np.testing.assert_array_equal(v.numpy(), b[i][key].numpy())
    b.set_epoch(1)
    assert any(not np.array_equal(a[i]["target"].numpy(), b[i]["target"].numpy()) for i in range(len(a)))


def test_reference_is_another_frame_of_the_same_identity(sequences: Path) -> None:
    """The reference is the window of a different frame (different opening) of the target's identity."""
    ds = GeneratorPairs(sequences, "train", augment=False, portrait_share=0.0)
    seq = _seq(sequences, "astro")
    for i in range(len(ds)):
        p = ds.plan(i)
        assert p.identity == "astro" and not p.portrait and p.reference_frame != p.target_frame
        assert abs(seq["opening_cm"][p.reference_frame] - seq["opening_cm"][p.target_frame]) >= 0.3
        want = ds[p.reference_frame]["target"]                   # item k is frame k here
        np.testing.assert_array_equal(ds[i]["reference"].numpy(), want.numpy())


def test_portrait_pairs_reconstruct_with_another_augmentation(sequences: Path) -> None:
    """Portrait pairs: same person, the reference differs from the target (its own augmentation)."""
    ds = GeneratorPairs(sequences, "train", augment=True, portrait_share=0.2)
    p = ds.plan(len(ds) - 1)
    assert p.portrait and p.identity == "astronaut" and p.reference_geometry != p.geometry
    item = ds[len(ds) - 1]
    assert float((item["target"] - item["reference"]).abs().mean()) > 0.01


def test_splits_keep_test_identities_and_hopper_out_of_train(sequences: Path) -> None:
    """Test identities and the Hopper portrait appear only in test; the astronaut only in train."""
    assert identities_by_split(sequences) == {"train": ["astro"], "val": ["astro_cut"], "test": ["grace"]}
    plans = {s: [GeneratorPairs(sequences, s, portrait_share=0.2).plan(i)
                 for i in range(len(GeneratorPairs(sequences, s, portrait_share=0.2)))] for s in ("train", "test")}
    assert {p.identity for p in plans["train"]} == {"astro", "astronaut"}
    assert {p.identity for p in plans["test"]} == {"grace", "hopper"}
    counts = describe(sequences, portrait_share=0.2)
    assert counts["val"]["portrait_pairs"] == 0 and counts["train"]["sequence_pairs"] == K
    assert counts["test"]["portraits"] == ["hopper"]


def test_cache_is_rebuilt_when_the_index_changes(sequences: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "sequences"
    shutil.copytree(sequences, root)
    GeneratorPairs(root, "train")
    first = (root / CACHE_NAME).stat().st_mtime_ns
    index = json.loads((root / "index.json").read_text())
    index["sequences"][1]["split"] = "val"
    (root / "index.json").write_text(json.dumps(index))
    assert GeneratorPairs(root, "val").describe()["identities"] == 2
    assert (root / CACHE_NAME).stat().st_mtime_ns != first
    assert not list(root.glob(".*.tmp.npz"))


def test_wide_open_mesh_drops_the_chin_and_keeps_the_nose(astronaut: np.ndarray) -> None:
    from presenter.face.fit import fit_face
    from presenter.face.landmarker import FaceLandmarker

    with FaceLandmarker("image") as lm:
        v = fit_face(lm.detect(astronaut)[0]).verts_px
    v256 = warp_points(v, align_transform(v, 256))
    w = wide_open_mesh(v256)
    assert 15 < w[CHIN, 1] - v256[CHIN, 1] < 40                       # 2.2 cm at ~13 px/cm, less at the chin
    np.testing.assert_allclose(w[1, :2], v256[1, :2], atol=0.5)       # nose tip
