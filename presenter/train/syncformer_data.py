"""SyncFormer training data from a corpus: cached speech features, mouth-region displacements,
bilabial frames, style groups, and the displacement basis.

Legend: T frames, F feature width, R mouth-region vertices, V = 468.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from presenter.audio.features import FeatureConfig, features_for_clip
from presenter.data.corpus import FPS, clip_dir, read_index
from presenter.face.canonical import LIPS_INNER, LIPS_OUTER, N_VERTICES
from presenter.motion.mouth import _weights

log = logging.getLogger(__name__)

BILABIALS = ("p", "b", "m")   # shared phone inventory (presenter.motion.visemes): lower-case ARPAbet
LIP_LOSS_WEIGHT = 4.0   # lip vertices count this much more than jaw and cheek vertices


def mouth_region() -> np.ndarray:
    """Indices (R,) of the vertices that speech moves: the jaw and lip weights of the mouth model."""
    jaw, lips, _ = _weights()
    return np.flatnonzero((jaw > 0) | (lips > 0))


def region_weights(region: np.ndarray) -> np.ndarray:
    """(R,) loss weights: lips heavier than jaw and cheeks."""
    w = np.ones(len(region), np.float32)
    w[np.isin(region, LIPS_OUTER + LIPS_INNER)] = LIP_LOSS_WEIGHT
    return w / w.mean()


def feature_tag(cfg: FeatureConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:10]


def cache_features(root: Path, cfg: FeatureConfig, *, split: str | None = None) -> None:
    """Compute and cache speech features per clip (clips/<id>/features_<tag>.npy), atomically, skipping done ones."""
    index = read_index(root)
    tag = feature_tag(cfg)
    todo = [c for c in index["clips"] if (split is None or c["split"] == split)
            and not (clip_dir(root, c["id"]) / f"features_{tag}.npy").is_file()]
    from presenter.engines.onnxruntime import whisper_encode

    encode = whisper_encode(max(1, torch.get_num_threads()))
    for c in tqdm(todo, desc="speech features", disable=not sys.stderr.isatty()):
        d = clip_dir(root, c["id"])
        feats = features_for_clip(np.load(d / "audio.npy"), cfg, n_frames=c["n_frames"], encode=encode)
        feats = feats.astype(np.float16)
        tmp = d / f".features_{tag}.tmp.npy"
        np.save(tmp, feats)
        os.replace(tmp, d / f"features_{tag}.npy")


@dataclass
class ClipArrays:
    id: str
    feats: np.ndarray      # (T, F) float16
    disp: np.ndarray       # (T, R, 3) float32 cm, canon - neutral on the mouth region
    bilabial: np.ndarray   # (T,) bool, frame centre inside a p/b/m closure
    style: str


def bilabial_frames(phones: list | None, n: int) -> np.ndarray:
    """(T,) bool: the frames the viseme model seals (presenter.motion.visemes): frame times k / fps
    inside a p, b or m, and the frame nearest each one's centre."""
    out = np.zeros(n, bool)
    times = np.arange(n) / FPS
    for ph, a, b in phones or []:
        if ph in BILABIALS:
            out |= (times >= a) & (times < b)
            out[min(n - 1, int(round((a + b) / 2 * FPS)))] = True
    return out


def load_split(root: Path, cfg: FeatureConfig, split: str) -> list[ClipArrays]:
    """All clips of a split with their cached features (call cache_features first)."""
    tag, region = feature_tag(cfg), mouth_region()
    out, missing = [], 0
    for c in read_index(root)["clips"]:
        if c["split"] != split:
            continue
        d = clip_dir(root, c["id"])
        if not (d / f"features_{tag}.npy").is_file():
            missing += 1
            continue
        meta = json.loads((d / "meta.json").read_text())
        with np.load(d / "face.npz") as z:
            disp = (z["canon"][:, region] - z["neutral"][region]).astype(np.float32)
        out.append(ClipArrays(c["id"], np.load(d / f"features_{tag}.npy"), disp,
                              bilabial_frames(meta.get("phones"), len(disp)),
                              str(meta.get("style", meta.get("identity", c["id"])))))
    if missing:
        log.warning("%s split %s: %d clips have no cached features and are left out", root, split, missing)
    return out


def fit_basis(clips: list[ClipArrays], n_basis: int, *, max_frames: int = 50000,
              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA basis of the region displacements -> (basis (K, V*3) full-mesh rows, coefficient std (K,))."""
    region = mouth_region()
    x = np.concatenate([c.disp.reshape(len(c.disp), -1) for c in clips])
    rng = np.random.default_rng(seed)
    if len(x) > max_frames:
        x = x[rng.choice(len(x), max_frames, replace=False)]
    # No mean removal: rest (zero displacement) must stay exactly representable.
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(n_basis, len(s))
    full = np.zeros((n_basis, N_VERTICES, 3), np.float32)
    full[:k, region] = vt[:k].reshape(k, len(region), 3)
    scale = np.ones(n_basis, np.float32)
    scale[:k] = s[:k] / np.sqrt(len(x))
    explained = float((s[:k] ** 2).sum() / (s ** 2).sum())
    log.info("displacement basis: %d components explain %.4f of the variance", k, explained)
    return torch.from_numpy(full.reshape(n_basis, -1)), torch.from_numpy(np.maximum(scale, 1e-4))
