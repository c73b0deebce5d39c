"""Face-swap training pairs (`presenter.train.swap_data.SwapPairs`): layout, the whole-face mask, the
reference (the same person, placed differently), determinism and splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from presenter.data.identities import split_of, write_identity
from presenter.face.landmarker import FaceLandmarker
from presenter.train.swap_data import SwapPairs


def _ids(split: str, n: int) -> list[str]:
    return [i for i in (f"t-{k:04d}" for k in range(200)) if split_of(i) == split][:n]


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray, hopper: np.ndarray) -> Path:
    """Two train identities (the portraits) and one test identity (the astronaut mirrored)."""
    root = tmp_path_factory.mktemp("identities")
    images = dict(zip(_ids("train", 2), (astronaut, hopper)))
    images[_ids("test", 1)[0]] = np.ascontiguousarray(astronaut[:, ::-1])
    with FaceLandmarker("image", max_faces=1) as lm:
        for ident, img in images.items():
            write_identity(root, ident, img, lm.detect(img)[0], {"id": ident}, {})
    (root / "index.json").write_text(json.dumps({"identities": [{"id": i} for i in images]}))
    return root


def test_pairs_have_the_documented_layout(identities: Path) -> None:
    pairs = SwapPairs(identities, "train")
    assert pairs.describe() == {"split": "train", "identities": 2, "pairs": 2}
    b = pairs[0]
    assert {k: tuple(v.shape) for k, v in b.items()} == {"target": (3, 128, 128), "guidance": (4, 128, 128),
                                                          "mask": (1, 128, 128), "reference": (3, 128, 128),
                                                          "weight": (1, 128, 128)}
    assert b["target"].min() >= -1 and b["target"].max() <= 1 and b["mask"].min() >= 0 and b["mask"].max() <= 1


def test_mask_is_the_whole_face_and_spares_the_surroundings(identities: Path) -> None:
    """Unaugmented: the face's centre is painted, the crop's corners (hair, background) are kept, and the
    mask covers the guidance's face (where the mesh is drawn)."""
    b = SwapPairs(identities, "train", augment=False)[0]
    mask, cov = b["mask"][0].numpy(), b["guidance"][3].numpy() > 0
    assert mask[64, 64] > 0.99
    assert mask[:10, :10].max() == 0 and mask[:10, -10:].max() == 0
    assert mask[cov].mean() > 0.95


def test_reference_is_the_same_person_placed_differently(identities: Path) -> None:
    """A one-photo identity's reference is the same photo under another geometry: close, not pixel-equal;
    another identity's photo is further away."""
    pairs = SwapPairs(identities, "train", seed=3)
    a, b = pairs[0], pairs[1]
    same = float((a["reference"] - a["target"]).abs().mean())
    other = float((b["reference"] - a["target"]).abs().mean())
    assert 0.02 < same < other


def test_pairs_are_deterministic_per_seed_and_epoch(identities: Path) -> None:
    p, q = SwapPairs(identities, "train", seed=1), SwapPairs(identities, "train", seed=1)
    assert all(np.array_equal(p[0][k], q[0][k]) for k in p[0])
    q.set_epoch(1)
    assert not np.array_equal(p[0]["target"], q[0]["target"])


def test_splits_keep_test_identities_out_of_train(identities: Path) -> None:
    assert [it.identity for it in SwapPairs(identities, "test").items] == _ids("test", 1)
    assert not set(_ids("test", 1)) & {it.identity for it in SwapPairs(identities, "train").items}
