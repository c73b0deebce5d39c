"""`presenter eval swap`: the face-swap generator on identities it never trained on.

Test identities (the identities folder's test split: `presenter data identities`) are paired in
order, source i into target i + 1, one portrait each, through `presenter.render.swap.FaceSwapper`
exactly as `presenter swap` drives it (the target's neutral mesh is its own, one frame). Per pair:
  identity     dlib's descriptor (same-person threshold 0.6) of the swapped face to the source and to
               the target, beside the target's own distance to the source (where the swap starts).
               A swap moves the output toward the source and away from the target.
  shape        the landmarker's mesh on the swapped frame, fitted and pose-free: its distance (cm, mean
               over vertices, after removing scale) to the source's and to the target's neutral mesh.
               The guidance carries the source's shape: the output should follow it.
  self-swap    source = target (a person swapped into their own photo): PSNR / SSIM inside the paint
               mask against the photo, the reconstruction the training optimised.
What it cannot show: motion over time, real (non-GAN) faces beyond the two shipped portraits, and
whether people would take the result for the source (dlib is one face-recognition model, evaluation only).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from presenter.data.identities import IdentityEncoder, identities_of
from presenter.errors import UserError
from presenter.face.align import warp_points
from presenter.face.fit import FittedFace, fit_points
from presenter.face.masks import swap_mask
from presenter.face.landmarker import FaceLandmarker
from presenter.render.swap import SIZE, FaceSwapper, face_crop
from presenter.train.evaluate_generator import mouth_psnr_ssim

GRID_PAIRS = 6
MASK_IN = 0.5


def _load(root: Path, ident: str) -> tuple[np.ndarray, FittedFace]:
    """An identity's portrait (H, W, 3) RGB and its fitted face."""
    bgr = cv2.imread(str(root / ident / "face.png"))
    if bgr is None or not (root / ident / "face.npz").is_file():
        raise UserError(f"{root / ident}: face.png or face.npz missing or unreadable; remake the identities "
                        "(presenter data identities)")
    with np.load(root / ident / "face.npz") as d:
        face = FittedFace(d["verts_px"], d["canon"], d["rotation"], float(d["scale"]), d["translation"], d["matrix"])
    return np.ascontiguousarray(bgr[..., ::-1]), face


def _shape(canon: np.ndarray) -> np.ndarray:
    """Pose-free mesh (V, 3) centred and scaled to unit RMS radius: its shape alone."""
    c = canon - canon.mean(0)
    return c / np.sqrt((c ** 2).sum(1).mean())


def _shape_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(_shape(a) - _shape(b), axis=1).mean())


def evaluate_swap(identities: str | Path, weights: str | Path | None, *, max_pairs: int = 0,
                  grid: Path | None = None) -> dict[str, Any]:
    """Score the swap generator on test-identity pairs; see the module docstring."""
    root = Path(identities)
    if grid is not None and not grid.parent.is_dir():
        raise UserError(f"--grid {grid}: its folder {grid.parent} does not exist")
    ids = identities_of(root, "test")
    if len(ids) < 2:
        raise UserError(f"{root}: {len(ids)} test identities; a swap needs pairs")
    n = len(ids) if not max_pairs else min(max_pairs, len(ids))
    swapper = FaceSwapper(Path(weights) if weights else None)
    enc, rows, tiles = IdentityEncoder(), [], []
    with FaceLandmarker("image", max_faces=1) as lm:
        def seen(rgb: np.ndarray):
            faces = lm.detect(rgb)
            return faces[0] if faces else None

        for k in tqdm(range(n), desc="swap pairs", unit="pair"):
            s_rgb, s_face = _load(root, ids[k])
            t_rgb, t_face = _load(root, ids[(k + 1) % len(ids)])
            src = swapper.source(face_crop(s_rgb, s_face.verts_px)[0][None], s_face.canon)
            out = swapper.swap(t_rgb, t_face, t_face.canon, src)
            crop, m = face_crop(t_rgb, t_face.verts_px)
            recon = face_crop(swapper.swap(t_rgb, t_face, t_face.canon, swapper.source(crop[None], t_face.canon)),
                              t_face.verts_px)[0]
            mask = swap_mask(warp_points(t_face.verts_px, m), SIZE) > MASK_IN
            psnr, ssim = mouth_psnr_ssim(recon, crop, mask)
            obs_s, obs_t, obs_o = seen(s_rgb), seen(t_rgb), seen(out)
            row: dict[str, Any] = {"source": ids[k], "target": ids[(k + 1) % len(ids)], "self_psnr": psnr,
                                   "self_ssim": ssim, "face_found": obs_o is not None}
            if obs_o is not None and obs_s is not None and obs_t is not None:
                ds, dt, do = (enc.descriptor(img, o.landmarks) for img, o in ((s_rgb, obs_s), (t_rgb, obs_t),
                                                                                (out, obs_o)))
                fitted = fit_points(obs_o.landmarks, obs_o.matrix)
                row.update(id_out_source=float(np.linalg.norm(do - ds)), id_out_target=float(np.linalg.norm(do - dt)),
                           id_target_source=float(np.linalg.norm(dt - ds)),
                           shape_out_source=_shape_distance(fitted.canon, s_face.canon),
                           shape_out_target=_shape_distance(fitted.canon, t_face.canon))
            rows.append(row)
            if grid is not None and len(tiles) < GRID_PAIRS:
                tiles.append([cv2.resize(face_crop(x, f.verts_px)[0], (160, 160))
                              for x, f in ((s_rgb, s_face), (t_rgb, t_face), (out, t_face))])
    result = {"pairs": len(rows), "weights": str(weights or "shipped"), "rows": rows, "summary": _summary(rows)}
    if grid is not None and tiles:
        _write_grid(grid, tiles)
    return result


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [r for r in rows if "id_out_source" in r]

    def med(key: str) -> float:
        return float(np.median([r[key] for r in scored])) if scored else float("nan")

    return {"pairs_scored": len(scored), "face_found": float(np.mean([r["face_found"] for r in rows])),
            "id_out_source_median": med("id_out_source"), "id_out_target_median": med("id_out_target"),
            "id_target_source_median": med("id_target_source"),
            "closer_to_source_than_target_was": float(np.mean([r["id_out_source"] < r["id_target_source"]
                                                               for r in scored])) if scored else float("nan"),
            "closer_to_source_than_to_target": float(np.mean([r["id_out_source"] < r["id_out_target"]
                                                              for r in scored])) if scored else float("nan"),
            "shape_out_source_median": med("shape_out_source"), "shape_out_target_median": med("shape_out_target"),
            "self_psnr_median": float(np.median([r["self_psnr"] for r in rows])),
            "self_ssim_median": float(np.median([r["self_ssim"] for r in rows]))}


def _write_grid(path: Path, tiles: list[list[np.ndarray]]) -> None:
    """Rows of (source, target, swapped), written atomically."""
    img = np.concatenate([np.concatenate(t, 1) for t in tiles], 0)
    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), img[..., ::-1]):
        raise UserError(f"--grid {path}: could not write the picture there")
    tmp.replace(path)


def format_table(result: dict[str, Any]) -> str:
    s = result["summary"]
    return "\n".join([
        f"| measure (median over {s['pairs_scored']} test pairs) | value |", "|---|---|",
        f"| dlib distance, target to source (before the swap) | {s['id_target_source_median']:.3f} |",
        f"| dlib distance, swapped to source | {s['id_out_source_median']:.3f} |",
        f"| dlib distance, swapped to target | {s['id_out_target_median']:.3f} |",
        f"| share of pairs moved toward the source | {s['closer_to_source_than_target_was']:.2f} |",
        f"| share of pairs nearer the source than the target | {s['closer_to_source_than_to_target']:.2f} |",
        f"| shape distance to source / to target | {s['shape_out_source_median']:.4f} / "
        f"{s['shape_out_target_median']:.4f} |",
        f"| self-swap PSNR / SSIM in the mask | {s['self_psnr_median']:.2f} dB / {s['self_ssim_median']:.3f} |",
        f"| face found on the output | {s['face_found']:.2f} |"])
