"""Training pairs for the face-swap generator: the whole face masked, identity from a reference.

The swap preset is the live generator (`GeneratorConfig.live()`, S = 128) on the whole aligned face
(the 128 px crop, `align_128`) instead of the mouth window:
  target     a face crop (S, S): an identity's portrait, or a frame of its graded mouth sequence
  guidance   the target's fitted mesh drawn by `presenter.face.guidance.render_guidance`
  mask       the whole face (`presenter.face.masks.swap_mask`: the mesh hull grown a little, feathered);
             outside it (hair, ears, neck, background) the target is copied
  reference  the same identity: another frame of its sequence, or the portrait itself under its own
             geometric augmentation, so the style code has to carry who it is, not where things are
  weight     1, plus the lips weight of the mouth generator (`lip_weight`)
At swap time the reference is the *source* person and the guidance is the target's expression and
pose on the source's shape (`presenter.offline.swap`); training never sees a cross-identity pair (there
is no ground truth for one), which is the ReSyncer recipe.

Data: the identities folder (`presenter data identities`: ID/crop_128.png, ID/face.npz) and, when
given, the mouth-prior sequences (`presenter data mouth-prior`: ID/seq.npz with crops_128 and
verts_128 of 8 graded openings). Splits are the identities' (hash of the id), so test identities
never train. Everything is read once into memory (about 100 MB for 560 identities + 200 sequences).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from presenter.data.identities import SPLITS, split_of
from presenter.errors import UserError
from presenter.face.guidance import render_guidance
from presenter.face.masks import swap_mask
from presenter.render.swap import SIZE
from presenter.train.generator_data import Colour, _random_colour, chw, lip_weight

AUG_SCALE = 0.05           # target geometry: scale 1 +- this, shift +- this of the side, mirror
REF_AUG_SCALE = 0.08       # the reference's own geometry (larger: identity, not alignment)


@dataclass(frozen=True)
class _Item:
    identity: str
    crops: np.ndarray      # (K, S, S, 3) uint8
    verts: np.ndarray      # (K, V, 3) float32, crop pixels


def _read_identities(root: Path, split: str) -> dict[str, _Item]:
    index = root / "index.json"
    if not index.is_file():
        raise UserError(f"{root} has no index.json; make identities with 'presenter data identities -o {root}'")
    ids = [i["id"] if isinstance(i, dict) else i for i in json.loads(index.read_text()).get("identities", [])]
    if not ids:
        ids = sorted(p.name for p in root.iterdir() if (p / "face.npz").is_file())
    out: dict[str, _Item] = {}
    chosen = [i for i in ids if split_of(i) == split]
    for ident in tqdm(chosen, desc=f"identities ({split})", leave=False, disable=None):
        folder = root / ident
        if not (folder / "crop_128.png").is_file():
            continue
        with np.load(folder / "face.npz") as z:
            verts = z["verts_128"]
        rgb = cv2.imread(str(folder / "crop_128.png"), cv2.IMREAD_COLOR)[..., ::-1]
        out[ident] = _Item(ident, rgb[None].copy(), verts[None].astype(np.float32))
    return out


def _read_sequences(root: Path, split: str) -> dict[str, _Item]:
    out: dict[str, _Item] = {}
    for path in tqdm(sorted(root.glob("*/seq.npz")), desc=f"sequences ({split})", leave=False, disable=None):
        ident = path.parent.name
        if split_of(ident) != split:
            continue
        with np.load(path) as z:
            ok = np.flatnonzero(z["found"])
            if len(ok) >= 2:
                out[ident] = _Item(ident, z["crops_128"][ok], z["verts_128"][ok].astype(np.float32))
    return out


def _affine(rng: np.random.Generator, amount: float) -> tuple[np.ndarray, bool]:
    """(2, 3) scale-and-shift about the crop's centre, and whether to mirror."""
    s = float(rng.uniform(1 - amount, 1 + amount))
    t = rng.uniform(-amount, amount, 2) * SIZE
    c = (SIZE - 1) / 2
    return np.array([[s, 0, c - s * c + t[0]], [0, s, c - s * c + t[1]]], np.float32), bool(rng.random() < 0.5)


def _warp(rgb: np.ndarray, m: np.ndarray, mirror: bool) -> np.ndarray:
    out = cv2.warpAffine(rgb, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(out[:, ::-1]) if mirror else out


class SwapPairs(Dataset):
    """Whole-face pairs of one split, as the generator trainer takes them (dicts of float32 tensors):
    target (3, S, S) and reference (3, S, S) in [-1, 1], guidance (4, S, S), mask (1, S, S), weight (1, S, S).

    Items: every frame of every identity (portraits first, then sequences' frames). The same
    (seed, epoch, index) gives the same pair; `set_epoch` draws new ones.
    """

    def __init__(self, identities: str | Path, split: str, *, sequences: str | Path | None = None,
                 seed: int = 0, augment: bool = True) -> None:
        if split not in {name for name, _ in SPLITS}:
            raise UserError(f"split must be train, val or test, got {split!r}")
        self.split, self.seed, self.augment, self.epoch = split, seed, augment, 0
        items = _read_identities(Path(identities), split)
        if sequences is not None:
            items.update(_read_sequences(Path(sequences), split))       # a sequence replaces its single portrait
        if not items:
            raise UserError(f"no {split} identities in {identities}" + (f" or {sequences}" if sequences else ""))
        self.items = list(items.values())
        self.frames = [(i, k) for i, it in enumerate(self.items) for k in range(len(it.crops))]

    def __len__(self) -> int:
        return len(self.frames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def describe(self) -> dict:
        return {"split": self.split, "identities": len(self.items), "pairs": len(self)}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        i, k = self.frames[index]
        item = self.items[i]
        others = [j for j in range(len(item.crops)) if j != k]
        ref = int(rng.choice(others)) if others else k
        if self.augment:
            (m, mirror), colour = _affine(rng, AUG_SCALE), _random_colour(rng)
            m_ref, mirror_ref = _affine(rng, REF_AUG_SCALE)
        else:
            m, mirror, colour = np.array([[1, 0, 0], [0, 1, 0]], np.float32), False, Colour()
            m_ref, mirror_ref = m, k == ref           # a portrait's reference is at least mirrored
        target = colour.apply(_warp(item.crops[k], m, mirror))
        reference = colour.apply(_warp(item.crops[ref], m_ref, mirror_ref))
        v = item.verts[k].copy()
        v[:, :2] = v[:, :2] @ m[:, :2].T + m[:, 2]
        v[:, 2] *= m[0, 0]
        guidance, mask, weight = render_guidance(v, SIZE), swap_mask(v, SIZE), lip_weight(v, SIZE)
        if mirror:
            guidance, mask, weight = (np.ascontiguousarray(a[:, ::-1]) for a in (guidance, mask, weight))
            cov = guidance[..., 3] > 0
            guidance[..., 0][cov] = 1.0 - guidance[..., 0][cov]
        return {"target": chw(target * 2.0 - 1.0), "guidance": chw(guidance), "mask": chw(mask[..., None]),
                "reference": chw(reference * 2.0 - 1.0), "weight": chw(weight[..., None])}
