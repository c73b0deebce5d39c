"""Mouth prior: a direction in the face GAN's w that opens (and, negated, closes) the mouth.

1. Samples: (w, landmarker measurements) for corpus candidates that are not val/test identities
   (train identities and rejected candidates), topped up with fresh z from the same seed's
   stream at indices >= EXTRA_OFFSET.
2. Direction: ridge regression of the inner-lip opening (cm, pose-free canonical mesh) on w;
   yaw, pitch, eye-opening and smile directions, regressed the same way, are projected out so
   that the edit keeps head pose and eyes and opens the mouth as in speech rather than in a laugh
   (conditional editing, as in InterFaceGAN). Closing is the negative direction.
3. Positions: an identity sits at p = (w - w_avg) . d / sigma (sigma: the samples' spread
   along d). An edit moves it to an absolute position t: w' = w + (t - p) sigma d, so every
   identity's sequence spans the same part of the direction (sealed ... wide open).
4. Evaluation on test identities over a grid of positions: opening reached, sealed lips,
   dlib identity distance to the unedited face, head-pose drift, eyes, face still found;
   the usable range is the run of positions around the identities' own that passes `Usable`.
5. Export per identity: `steps` frames from the sealed end to the wide-open end of the usable
   range, with fitted meshes and aligned crops, written atomically and resumably. `splits` limits
   which identities are exported; sequences/index.json lists every finished sequence of a kept
   identity, so a later test-only export (after the corpus grew) leaves train and val as they were.

On disk (OUT):
  samples_extra.npz, direction.npz, evaluation.json, evaluation.npz, comparison.json
  sequences/<id>/seq.npz       t, alpha, w, opening_cm, pose_deg, blink, eye_opening, id_distance, found,
                               landmarks, blendshapes, meshes (verts_px in frame pixels, canon cm),
                               align_128/256, verts_128/256, crops_128, crops_256
  sequences/<id>/frame_KK.jpg  the 512 px frames (JPEG quality 95)
  sequences/index.json         exported ids with their split
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from presenter.data.facegan import LINEAGE, latent_z
from presenter.data.identities import (EYE_BLINK, FULL_PX, JAW_OPEN, MOUTH_SMILE, SPLITS, Pipeline, Thresholds,
                                       eye_opening, face_arrays, head_pose_deg, identities_of, load_index,
                                       write_json_atomic)
from presenter.errors import UserError
from presenter.face.align import warp_points
from presenter.face.canonical import LIPS_INNER
from presenter.face.fit import fit_face, mouth_opening_cm
from presenter.face.landmarker import FaceLandmarker

log = logging.getLogger(__name__)

EXTRA_OFFSET = 10_000_000        # candidate indices for extra regression samples: never identity candidates
SEALED_CM = 0.1                  # inner-lip gap below this: lips sealed (closed GAN mouths measure -0.05..0.05)
SEALED_SHARE = 0.9               # a position "seals" when at least this share of identities is sealed there
EYES = Thresholds()              # eyes open: blink score and lid opening within the identity filter's limits
TARGETS = ("opening_cm", "yaw_deg", "pitch_deg", "eye_opening", "smile")   # regressed on w; all but the first
                                                                            # are projected out of the edit
_INDEX_KEYS = {"opening_cm": "mouth_open_cm"}   # index.json names of TARGETS that differ
EVAL_POSITIONS = tuple(float(t) for t in np.arange(-4.0, 6.01, 1.0))   # sigma units along the direction
RIDGE_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)   # ridge strengths tried, times trace(X^T X) / D


@dataclass(frozen=True)
class Usable:
    """What an edit position must keep, over the evaluated test identities."""
    max_mean_id_distance: float = 0.35     # mean dlib distance to the unedited face
    min_same_person: float = 0.95          # fraction still under dlib's same-person threshold 0.6
    max_median_pose_drift_deg: float = 2.0  # median |yaw| and |pitch| change
    min_eyes_open: float = 0.95            # fraction with eyes open (EYES: blink score and lid opening)
    min_found: float = 1.0                 # fraction where the landmarker still finds the face


@dataclass(frozen=True)
class PriorOptions:
    n_samples: int = 2000          # regression samples (w, measurements)
    n_eval: int = 64               # test identities for the evaluation
    steps: int = 8                 # frames per exported sequence
    splits: tuple[str, ...] = ("train", "val", "test")   # splits to export
    limit: int | None = None       # export at most this many identities (None: all)
    n_compare: int = 16            # test sequences compared with the baseline warp renderer
    eval_positions: tuple[float, ...] = EVAL_POSITIONS   # positions checked on test identities, sigma units
    usable: Usable = Usable()      # what a usable edit position must keep

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["splits"], d["eval_positions"] = list(self.splits), list(self.eval_positions)
        return d


@dataclass(frozen=True)
class Direction:
    """The fitted edit: unit direction (D,), spread sigma, and how well the opening is predicted."""
    d: np.ndarray          # (D,) float32, unit length, opening up
    d_raw: np.ndarray      # (D,) float32, before the nuisance directions were projected out
    sigma: float           # std of (w - w_avg) . d over the samples
    w_avg: np.ndarray      # (D,) float32
    slope_cm: float        # d opening / d position (cm per sigma), from the samples
    intercept_cm: float    # predicted opening at position 0
    r2_cv: float           # 5-fold cross-validated R^2 of the ridge fit of the opening
    cos_nuisance: dict[str, float]  # cosine of the raw direction with each nuisance direction (TARGETS[1:])
    n_samples: int

    def position(self, w: np.ndarray) -> np.ndarray:
        """Position(s) along d in sigma units of w (..., D)."""
        return (np.asarray(w, np.float32) - self.w_avg) @ self.d / self.sigma

    def move(self, w: np.ndarray, t: float) -> np.ndarray:
        """w (D,) moved along d to absolute position t."""
        return (w + (t - self.position(w)) * self.sigma * self.d).astype(np.float32)


def measure(p: Pipeline, w: np.ndarray) -> dict[str, Any]:
    """Render w, run the landmarker: image, observation (or None) and the measurements."""
    image = p.render(w)
    faces = p.landmarker.detect(image)
    if not faces:
        return {"image": image, "face": None}
    f = faces[0]
    yaw, pitch, roll = (float(a) for a in head_pose_deg(f.matrix))
    canon = fit_face(f).canon
    blink = float(max(f.blendshapes[EYE_BLINK[0]], f.blendshapes[EYE_BLINK[1]]))
    eyes = float(eye_opening(canon).min())
    return {"image": image, "face": f, "opening_cm": float(mouth_opening_cm(canon)),
            "yaw_deg": yaw, "pitch_deg": pitch, "roll_deg": roll, "blink": blink, "eye_opening": eyes,
            "eyes_open": bool(blink <= EYES.max_eye_blink and eyes >= EYES.min_eye_opening),
            "smile": float(f.blendshapes[list(MOUTH_SMILE)].mean()), "jaw_open": float(f.blendshapes[JAW_OPEN])}


def _save_npz_atomic(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _save_extra(path: Path, idx: list[int], vals: list[tuple[float, ...]]) -> None:
    _save_npz_atomic(path, index=np.array(idx, np.int64), targets=np.array(vals, np.float32), names=np.array(TARGETS))


def collect_samples(p: Pipeline, identities: Path, out: Path, n: int, *,
                    progress: bool = False) -> dict[str, np.ndarray]:
    """n regression samples: index (N,), targets (N, 4) in TARGETS order, w (N, D).

    Corpus candidates come first when index.json holds all TARGETS for them (corpora made before
    the smile measure do not); the rest are fresh faces at candidate indices >= EXTRA_OFFSET,
    cached in out/samples_extra.npz (resumable; a cache of other targets is not reused).
    """
    from tqdm import tqdm

    index = load_index(identities)
    seed = index["settings"]["seed"]
    held_out = {r["index"] for r in index["identities"] if r["split"] != "train"}
    keys = [_INDEX_KEYS.get(t, t) for t in TARGETS]
    rows = sorted((r["index"], *(r[k] for k in keys)) for r in index["identities"] + index["rejected"]
                  if all(k in r for k in keys) and r["index"] not in held_out)[:n]
    idx, vals = [r[0] for r in rows], [r[1:] for r in rows]
    path = out / "samples_extra.npz"
    extra_idx: list[int] = []
    extra_vals: list[tuple[float, ...]] = []
    if path.is_file():
        with np.load(path) as z:
            if "names" in z.files and tuple(str(n) for n in z["names"]) == TARGETS:
                extra_idx, extra_vals = [int(i) for i in z["index"]], [tuple(v) for v in z["targets"]]
    need = n - len(idx)
    nxt = extra_idx[-1] + 1 if extra_idx else EXTRA_OFFSET
    bar = tqdm(total=max(0, need), initial=min(len(extra_idx), max(0, need)), desc="mouth samples", unit="face",
               disable=not progress)
    while len(extra_idx) < need:
        m = measure(p, p.gan.w_from_z(latent_z(seed, nxt), p.psi))
        if m["face"] is not None:
            extra_idx.append(nxt)
            extra_vals.append(tuple(m[k] for k in TARGETS))
            bar.update(1)
            if len(extra_idx) % 100 == 0:
                _save_extra(path, extra_idx, extra_vals)
        nxt += 1
    bar.close()
    if extra_idx:
        _save_extra(path, extra_idx, extra_vals)
    idx += extra_idx[:max(0, need)]
    vals += extra_vals[:max(0, need)]
    z = np.stack([latent_z(seed, i) for i in idx])
    return {"index": np.array(idx, np.int64), "targets": np.array(vals, np.float32),
            "w": p.gan.truncate(p.gan.mapping(z), p.psi)}


def _ridge_path(x: np.ndarray, y: np.ndarray, lams: list[float]) -> list[np.ndarray]:
    """Ridge coefficients (D, K) of centred x (N, D) on centred y (N, K), for each strength, from one SVD."""
    u, sv, vt = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    return [vt.T @ ((sv / (sv ** 2 + lam))[:, None] * uty) for lam in lams]


def fit_direction(w: np.ndarray, targets: np.ndarray, w_avg: np.ndarray) -> Direction:
    """Ridge-regress TARGETS (N, 4) on w (N, D); the opening direction with the nuisance ones projected out."""
    x = (w - w_avg).astype(np.float64)
    xc = x - x.mean(0)
    y = targets.astype(np.float64)
    yc = y - y.mean(0)
    lams = [r * float((xc ** 2).sum()) / x.shape[1] for r in RIDGE_GRID]   # trace(X^T X) / D
    folds = np.arange(len(x)) % 5
    pred = np.empty((len(lams), len(x)))
    for f in range(5):                                        # 5-fold CV of the opening
        tr, te = folds != f, folds == f
        mu_x, mu_y = xc[tr].mean(0), yc[tr, :1].mean(0)
        for i, b in enumerate(_ridge_path(xc[tr] - mu_x, yc[tr, :1] - mu_y, lams)):
            pred[i, te] = ((xc[te] - mu_x) @ b + mu_y)[:, 0]
    r2 = 1.0 - ((pred - yc[None, :, 0]) ** 2).sum(1) / (yc[:, 0] ** 2).sum()
    best = int(np.argmax(r2))
    coefs = _ridge_path(xc, yc, [lams[best]])[0]              # (D, 4)
    unit = coefs / np.linalg.norm(coefs, axis=0)
    d_raw = unit[:, 0]
    q, _ = np.linalg.qr(unit[:, 1:])                          # orthonormal basis of yaw, pitch, eye-opening directions
    d = d_raw - q @ (q.T @ d_raw)
    d /= np.linalg.norm(d)
    proj = x @ d
    sigma = float(proj.std())
    slope, intercept = np.polyfit(proj / sigma, y[:, 0], 1)
    return Direction(d=d.astype(np.float32), d_raw=d_raw.astype(np.float32), sigma=sigma,
                     w_avg=w_avg.astype(np.float32), slope_cm=float(slope), intercept_cm=float(intercept),
                     r2_cv=float(r2[best]), cos_nuisance={n: round(float(d_raw @ unit[:, i + 1]), 4)
                                                          for i, n in enumerate(TARGETS[1:])},
                     n_samples=len(w))


def save_direction(path: Path, dr: Direction) -> None:
    arrays = {k: np.asarray(v) for k, v in dataclasses.asdict(dr).items() if k != "cos_nuisance"}
    _save_npz_atomic(path, **arrays, cos_nuisance=np.array(json.dumps(dr.cos_nuisance)))


def load_direction(path: Path) -> Direction:
    with np.load(path) as z:
        kw = {k: z[k] for k in z.files}
    kw["cos_nuisance"] = json.loads(str(kw["cos_nuisance"]))
    for k in ("sigma", "slope_cm", "intercept_cm", "r2_cv"):
        kw[k] = float(kw[k])
    kw["n_samples"] = int(kw["n_samples"])
    return Direction(**kw)


def _identity(root: Path, ident: str) -> dict[str, np.ndarray]:
    with np.load(root / ident / "face.npz") as z:
        return {k: z[k] for k in ("w", "descriptor", "pose_deg")}


def evaluate(p: Pipeline, dr: Direction, root: Path, ids: list[str], positions: tuple[float, ...] = EVAL_POSITIONS,
             *, progress: bool = False) -> dict[str, np.ndarray]:
    """Edit each identity to every position; arrays (I, T) of what the landmarker and dlib see."""
    from tqdm import tqdm

    n_i, n_t = len(ids), len(positions)
    res = {k: np.full((n_i, n_t), np.nan, np.float32)
           for k in ("opening_cm", "id_distance", "yaw_drift", "pitch_drift", "blink", "eye_opening", "smile",
                     "jaw_open", "alpha")}
    res["eyes_open"] = np.zeros((n_i, n_t), bool)
    res["found"] = np.zeros((n_i, n_t), bool)
    res["p0"] = np.zeros(n_i, np.float32)
    for i, ident in enumerate(tqdm(ids, desc="evaluate edit", unit="id", disable=not progress)):
        base = _identity(root, ident)
        res["p0"][i] = dr.position(base["w"])
        for j, t in enumerate(positions):
            m = measure(p, dr.move(base["w"], t))
            res["alpha"][i, j] = t - res["p0"][i]
            if m["face"] is None:
                continue
            res["found"][i, j] = True
            res["opening_cm"][i, j] = m["opening_cm"]
            res["yaw_drift"][i, j] = m["yaw_deg"] - base["pose_deg"][0]
            res["pitch_drift"][i, j] = m["pitch_deg"] - base["pose_deg"][1]
            res["blink"][i, j] = m["blink"]
            res["eye_opening"][i, j] = m["eye_opening"]
            res["eyes_open"][i, j] = m["eyes_open"]
            res["smile"][i, j] = m["smile"]
            res["jaw_open"][i, j] = m["jaw_open"]
            res["id_distance"][i, j] = p.encoder.distance(p.encoder.descriptor(m["image"], m["face"].landmarks),
                                                          base["descriptor"])
    res["positions"] = np.array(positions, np.float32)
    return res


def summarise(res: dict[str, np.ndarray], usable: Usable = Usable()) -> dict[str, Any]:
    """Per position: opening reached, sealed fraction, identity distance, pose drift, eyes; and the usable range."""
    rows = []
    for j, t in enumerate(res["positions"]):
        ok = res["found"][:, j]
        o, dist = res["opening_cm"][ok, j], res["id_distance"][ok, j]
        rows.append({
            "t": float(t), "found": float(ok.mean()),
            "opening_cm_p10": float(np.percentile(o, 10)) if ok.any() else None,
            "opening_cm_median": float(np.median(o)) if ok.any() else None,
            "opening_cm_p90": float(np.percentile(o, 90)) if ok.any() else None,
            "sealed": float((o < SEALED_CM).mean()) if ok.any() else 0.0,
            "id_distance_mean": float(dist.mean()) if ok.any() else None,
            "id_distance_p90": float(np.percentile(dist, 90)) if ok.any() else None,
            "same_person": float((dist < 0.6).mean()) if ok.any() else 0.0,
            "yaw_drift_median_abs": float(np.median(np.abs(res["yaw_drift"][ok, j]))) if ok.any() else None,
            "pitch_drift_median_abs": float(np.median(np.abs(res["pitch_drift"][ok, j]))) if ok.any() else None,
            "eyes_open": float(res["eyes_open"][ok, j].mean()) if ok.any() else 0.0,
            "smile_median": float(np.median(res["smile"][ok, j])) if ok.any() else None,
            "jaw_open_median": float(np.median(res["jaw_open"][ok, j])) if ok.any() else None,
            "edit_abs_alpha_median": float(np.median(np.abs(res["alpha"][:, j]))),
        })
    for r in rows:
        r["usable"] = bool(r["found"] >= usable.min_found and r["id_distance_mean"] is not None
                           and r["id_distance_mean"] <= usable.max_mean_id_distance
                           and r["same_person"] >= usable.min_same_person
                           and r["yaw_drift_median_abs"] <= usable.max_median_pose_drift_deg
                           and r["pitch_drift_median_abs"] <= usable.max_median_pose_drift_deg
                           and r["eyes_open"] >= usable.min_eyes_open)
    # The usable range: the contiguous run of usable positions around the identities' own median position.
    ts = [r["t"] for r in rows]
    centre = int(np.argmin(np.abs(np.array(ts) - float(np.median(res["p0"])))))
    lo = hi = centre
    if rows[centre]["usable"]:
        while lo > 0 and rows[lo - 1]["usable"]:
            lo -= 1
        while hi < len(rows) - 1 and rows[hi + 1]["usable"]:
            hi += 1
    # The mildest closing edit that seals the lips of nearly everyone: the highest usable position with
    # at least SEALED_SHARE of the identities sealed.
    sealed_at = next((r["t"] for r in rows[lo:hi + 1][::-1] if r["sealed"] >= SEALED_SHARE), None)
    # Identity distance against the size of the edit, pooled over all positions.
    a, dist = np.abs(res["alpha"]).ravel(), res["id_distance"].ravel()
    ok = ~np.isnan(dist)
    bins = [(0.0, 0.5), (0.5, 1.5), (1.5, 2.5), (2.5, 3.5), (3.5, 4.5), (4.5, 6.0), (6.0, 99.0)]
    by_alpha = [{"abs_alpha": f"{b0}-{b1}", "n": int(((a >= b0) & (a < b1) & ok).sum()),
                 "id_distance_mean": float(dist[(a >= b0) & (a < b1) & ok].mean())
                 if ((a >= b0) & (a < b1) & ok).any() else None} for b0, b1 in bins]
    return {"positions": rows, "usable_range": [ts[lo], ts[hi]] if rows[centre]["usable"] else None,
            "sealed_at": sealed_at, "identity_position_median": float(np.median(res["p0"])),
            "identity_position_p10_p90": [float(np.percentile(res["p0"], 10)), float(np.percentile(res["p0"], 90))],
            "n_identities": int(len(res["p0"])), "by_edit_size": by_alpha,
            "criteria": dataclasses.asdict(usable), "sealed_cm": SEALED_CM}


def sequence_positions(summary: dict[str, Any], steps: int) -> np.ndarray:
    """`steps` positions from sealed (the mildest sealing position, else the usable low end) to the most open."""
    if summary["usable_range"] is None:
        raise UserError("no edit position passed the usability checks: the mouth prior cannot be exported "
                        "(see evaluation.json)")
    lo, hi = summary["usable_range"]
    if summary["sealed_at"] is not None and summary["sealed_at"] < hi:
        lo = summary["sealed_at"]
    return np.linspace(lo, hi, steps).astype(np.float32)


def render_sequence(p: Pipeline, dr: Direction, w: np.ndarray, descriptor: np.ndarray,
                    positions: np.ndarray) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Frames of one identity along positions: (arrays for seq.npz, 512 px RGB frames)."""
    n = len(positions)
    arr: dict[str, np.ndarray] = {
        "t": positions, "alpha": positions - dr.position(w), "found": np.zeros(n, bool),
        "opening_cm": np.full(n, np.nan, np.float32), "pose_deg": np.full((n, 3), np.nan, np.float32),
        "blink": np.full(n, np.nan, np.float32), "eye_opening": np.full(n, np.nan, np.float32),
        "id_distance": np.full(n, np.nan, np.float32),
        "w": np.stack([dr.move(w, float(t)) for t in positions])}
    per_frame: list[dict[str, np.ndarray]] = []
    frames = []
    for k in range(n):
        m = measure(p, arr["w"][k])
        frames.append(m["image"])
        if m["face"] is None:
            per_frame.append({})
            continue
        arr["found"][k] = True
        arr["opening_cm"][k] = m["opening_cm"]
        arr["pose_deg"][k] = (m["yaw_deg"], m["pitch_deg"], m["roll_deg"])
        arr["blink"][k] = m["blink"]
        arr["eye_opening"][k] = m["eye_opening"]
        arr["id_distance"][k] = p.encoder.distance(p.encoder.descriptor(m["image"], m["face"].landmarks), descriptor)
        fa, crops = face_arrays(m["image"], m["face"])
        per_frame.append({**{k2: fa[k2] for k2 in ("landmarks", "verts_px", "canon", "align_128", "align_256",
                                                    "verts_128", "verts_256", "blendshapes")},
                          "crops_128": crops[128], "crops_256": crops[256]})
    template = next((f for f in per_frame if f), None)
    if template is not None:
        for key, v in template.items():
            arr[key] = np.stack([f.get(key, np.zeros_like(v)) for f in per_frame])
    return arr, frames


def write_sequence(root: Path, ident: str, arrays: dict[str, np.ndarray], frames: list[np.ndarray],
                   meta: dict[str, Any]) -> Path:
    """One identity's sequence folder, written to a temporary sibling and renamed into place."""
    out = root / ident
    tmp = Path(tempfile.mkdtemp(prefix=f".{ident}.", suffix=".tmp", dir=root))
    try:
        tmp.chmod(0o755)
        for k, f in enumerate(frames):
            if not cv2.imwrite(str(tmp / f"frame_{k:02d}.jpg"), f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OSError(f"could not write {tmp / f'frame_{k:02d}.jpg'}")
        np.savez_compressed(tmp / "seq.npz", **arrays)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def mouth_sharpness(crop: np.ndarray, verts_crop: np.ndarray, *, interior: bool = False) -> float:
    """Variance of the Laplacian over the mouth opening of a crop (S, S, 3): the inner-lip polygon grown
    by 2 px (lip edges included) or, with interior=True, shrunk by 2 px (only what shows inside)."""
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mask = np.zeros(gray.shape, np.uint8)
    cv2.fillPoly(mask, [np.round(verts_crop[list(LIPS_INNER), :2]).astype(np.int32)], 255)
    mask = (cv2.erode if interior else cv2.dilate)(mask, np.ones((5, 5), np.uint8))
    lap = cv2.Laplacian(gray, cv2.CV_32F)
    return float(lap[mask > 0].var()) if (mask > 0).sum() > 10 else float("nan")


def baseline_render(seq: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The corpus renderer's look for frame k: frame 0's 256 crop warped to frame k's mesh, cavity drawn.

    Returns (crop (256, 256, 3) uint8, the target mesh in crop pixels (V, 3)).
    """
    from presenter.face.warp import warp_image
    from presenter.render.warp_baseline import draw_mouth_interior

    m0 = seq["align_256"][0]
    src = seq["verts_256"][0]
    dst = warp_points(seq["verts_px"][k], m0)
    out = warp_image(seq["crops_256"][0], src, dst)
    upper, lower = list(LIPS_INNER[:11]), [LIPS_INNER[10], *LIPS_INNER[11:], LIPS_INNER[0]]
    base_gap_px = float(np.max(src[lower[::-1], 1] - src[upper, 1]))   # the frame's own opening, as the renderer's
    draw_mouth_interior(out, dst, 1.0, 0.3, base_gap_px=base_gap_px)
    return out, dst


def compare_with_baseline(seqs: list[dict[str, np.ndarray]], dr: Direction) -> dict[str, Any]:
    """GAN frames against the baseline warp renderer asked for the same target meshes (256 px crops).

    Command: the GAN frame's fitted mesh at each step (frames 1..K-1; frame 0 is the baseline's source).
    Opening error: |landmarker opening on the 256 px image - the command's opening|, for the GAN crop
    and for the baseline render. Position error: |GAN opening - the linear model's opening at t|.
    Sharpness: variance of the Laplacian in the mouth opening, with and without the lip edges.
    """
    names = ("gan_opening_error_cm", "baseline_opening_error_cm", "gan_position_error_cm",
             "gan_mouth_sharpness", "baseline_mouth_sharpness", "gan_interior_sharpness",
             "baseline_interior_sharpness")
    v: dict[str, list[float]] = {n: [] for n in names}
    n_frames = 0
    with FaceLandmarker("image") as lm:
        def opening(img: np.ndarray) -> float:
            faces = lm.detect(img)
            return float(mouth_opening_cm(fit_face(faces[0]).canon)) if faces else float("nan")

        for seq in seqs:
            if not seq["found"].all():
                continue
            for k in range(1, len(seq["t"])):
                n_frames += 1
                target = float(seq["opening_cm"][k])
                gan = seq["crops_256"][k]
                base, dst = baseline_render(seq, k)
                v["gan_opening_error_cm"].append(abs(opening(gan) - target))
                v["baseline_opening_error_cm"].append(abs(opening(base) - target))
                v["gan_position_error_cm"].append(abs(target - (dr.intercept_cm + dr.slope_cm * float(seq["t"][k]))))
                v["gan_mouth_sharpness"].append(mouth_sharpness(gan, seq["verts_256"][k]))
                v["baseline_mouth_sharpness"].append(mouth_sharpness(base, dst))
                v["gan_interior_sharpness"].append(mouth_sharpness(gan, seq["verts_256"][k], interior=True))
                v["baseline_interior_sharpness"].append(mouth_sharpness(base, dst, interior=True))
    out: dict[str, Any] = {"n_sequences": len(seqs), "n_frames": n_frames}
    for n in names:
        a = np.array(v[n], np.float64)
        out[f"{n}_median"] = float(np.nanmedian(a)) if np.isfinite(a).any() else None
    out["baseline_found"] = float(np.isfinite(np.array(v["baseline_opening_error_cm"])).mean()) if n_frames else 0.0
    out["gan_found"] = float(np.isfinite(np.array(v["gan_opening_error_cm"])).mean()) if n_frames else 0.0
    return out


def grid_image(seqs: list[dict[str, np.ndarray]], *, cell: int = 96) -> np.ndarray:
    """Rows: per identity the GAN sequence and, below it, the baseline warp renderer on the same meshes.

    Cells are the lower 5/8 of the 256 px aligned crop, cell px wide; labels give the opening (cm)
    and the dlib distance to the unedited face.
    """
    rows = []
    for seq in seqs:
        n = len(seq["t"])
        gan_cells, base_cells = [], []
        for k in range(n):
            g = seq["crops_256"][k]
            b = baseline_render(seq, k)[0] if k else seq["crops_256"][0]
            for src, dst, label in ((g, gan_cells, f"{seq['opening_cm'][k]:.2f} d{seq['id_distance'][k]:.2f}"),
                                    (b, base_cells, "warp")):
                part = cv2.resize(src[96:256], (cell, cell * 160 // 256), interpolation=cv2.INTER_AREA).copy()
                cv2.putText(part, label, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1, cv2.LINE_AA)
                dst.append(part)
        rows += [np.concatenate(gan_cells, 1), np.concatenate(base_cells, 1)]
    return np.concatenate(rows, 0)


def _write_png_small(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(rgb).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)


def run_mouth_prior(identities: str | Path, out: str | Path, opts: PriorOptions = PriorOptions(), *,
                    progress: bool = False, pipeline: Pipeline | None = None,
                    grid_path: str | Path | None = None) -> dict[str, Any]:
    """Samples -> direction -> evaluation on test identities -> per-identity sequences. Returns the summary.

    Each stage's result is kept in `out` and reused by later runs (delete direction.npz, or
    evaluation.npz and evaluation.json, to redo a stage); finished sequences are skipped.
    """
    from tqdm import tqdm

    if opts.steps < 2:
        raise UserError(f"--steps must be at least 2 (sealed and open), got {opts.steps}")
    if opts.n_samples < 2:
        raise UserError(f"--samples must be at least 2, got {opts.n_samples}")
    unknown = set(opts.splits) - {name for name, _ in SPLITS}
    if unknown:
        raise UserError(f"--splits: unknown split(s) {sorted(unknown)}; use train, val and/or test")
    root = Path(identities)
    index = load_index(root)
    out = Path(out)
    (out / "sequences").mkdir(parents=True, exist_ok=True)
    settings = index["settings"]
    if settings.get("source") == "images":
        raise UserError(f"{root} holds imported photos; the mouth prior edits the face GAN's latents and needs "
                        "identities made by 'presenter data identities --count N'")
    p = pipeline or Pipeline(psi=settings["psi"], thresholds=Thresholds(**settings["thresholds"]))
    try:
        dpath = out / "direction.npz"
        if dpath.is_file():
            dr = load_direction(dpath)
        else:
            s = collect_samples(p, root, out, opts.n_samples, progress=progress)
            dr = fit_direction(s["w"], s["targets"], p.gan.w_avg)
            save_direction(dpath, dr)
        log.info("direction from %d samples: CV R^2 %.3f, %.3f cm per sigma", dr.n_samples, dr.r2_cv, dr.slope_cm)
        spath, rpath = out / "evaluation.json", out / "evaluation.npz"
        if spath.is_file():
            summary = json.loads(spath.read_text())
        else:
            test_ids = identities_of(root, "test")[:opts.n_eval]
            if not test_ids:
                raise UserError(f"{root} has no test identities to check the edit on; generate more identities")
            if rpath.is_file():                         # measured before: only the summary is redone
                with np.load(rpath) as z:
                    res = {k: z[k] for k in z.files}
            else:
                res = evaluate(p, dr, root, test_ids, opts.eval_positions, progress=progress)
                _save_npz_atomic(rpath, **res)
            summary = {"direction": {"n_samples": dr.n_samples, "r2_cv": dr.r2_cv, "slope_cm_per_sigma": dr.slope_cm,
                                     "intercept_cm": dr.intercept_cm, "sigma": dr.sigma,
                                     "cos_raw_with": dr.cos_nuisance},
                       **summarise(res, opts.usable), "test_ids": test_ids}
            write_json_atomic(spath, summary)
        positions = sequence_positions(summary, opts.steps)
        summary["sequence_positions"] = positions.tolist()
        seq_root = out / "sequences"
        for stale in seq_root.glob(".*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        split = {r["id"]: r["split"] for r in index["identities"]}
        ids = [i for i in identities_of(root) if split[i] in opts.splits][:opts.limit]
        for ident in tqdm(ids, desc="mouth sequences", unit="id", disable=not progress):
            if (seq_root / ident / "meta.json").is_file():
                continue
            base = _identity(root, ident)
            arrays, frames = render_sequence(p, dr, base["w"], base["descriptor"], positions)
            meta = {"id": ident, "split": split[ident], "positions": positions.tolist(), "frame_px": FULL_PX,
                    "sealed_cm": SEALED_CM, "opening_cm": [round(float(o), 4) for o in arrays["opening_cm"]],
                    "lineage": LINEAGE}
            write_sequence(seq_root, ident, arrays, frames, meta)
        # Every finished sequence of a kept identity, not only this run's splits: a test-only export
        # leaves the train and val entries that a training run reads as they were.
        done = [{"id": i, "split": split[i]} for i in identities_of(root) if (seq_root / i / "meta.json").is_file()]
        write_json_atomic(seq_root / "index.json", {"positions": positions.tolist(), "sequences": done,
                                                    "lineage": LINEAGE})
        log.info("sequences of %s: %d identities; index.json lists %d (%s)", ",".join(opts.splits), len(ids),
                 len(done), ", ".join(f"{n} {sum(d['split'] == n for d in done)}" for n, _ in SPLITS))
        test_seqs = [i for i in summary["test_ids"] if (seq_root / i / "meta.json").is_file()][:opts.n_compare]
        seqs = []
        for i in test_seqs:
            with np.load(seq_root / i / "seq.npz") as z:
                seqs.append({k: z[k] for k in z.files})
        if seqs and not (out / "comparison.json").is_file():
            write_json_atomic(out / "comparison.json", compare_with_baseline(seqs, dr))
        if seqs:
            _write_png_small(Path(grid_path) if grid_path else out / "grid.png", grid_image(seqs[:3]))
        return summary
    finally:
        if pipeline is None:
            p.close()
