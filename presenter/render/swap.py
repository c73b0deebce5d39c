"""Face swap with the rewired generator: the target's expression and pose on the source's face.

Per target frame (legend: S = 128 crop pixels, V = 468 vertices, N style width):
  the target's fitted mesh -> its expression (pose-free mesh minus the target's neutral mesh) added to
  the source's neutral mesh, posed as the target is -> the swapped mesh
  -> the 128 px aligned crop of the frame (framed on the target's face), guidance (S, S, 4) of the
  swapped mesh, paint mask (S, S): the whole face of both meshes (`swap_mask`)
  -> generator(crop, mask, guidance, the source's styles) -> colour matched to the target along the
  mask's edge (its light and skin tone at the border) -> feathered paste-back into the frame.

The weights are the swap preset (`presenter train generator --task swap`: the whole face masked,
identity from a reference of the same person; `presenter/models/weights/generator-swap`). The styles
are the mean over the source's reference crops.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch

from presenter.errors import UserError
from presenter.face.align import paste_back, warp_points
from presenter.face.fit import FittedFace, pose_mesh
from presenter.face.guidance import render_guidance
from presenter.face.masks import swap_mask
from presenter.models.generator import load_generator
from presenter.render.generator import colour_match, generator_session, run_generator


SIZE = 128      # the aligned 128 px face crop (`align_128`): the swap generator's crop_px


def swap_weights_dir() -> Path:
    """Where the shipped face-swap generator lives (config.json, model.safetensors, MODEL_CARD.md)."""
    return Path(str(resources.files("presenter.models").joinpath("weights/generator-swap")))


def face_crop(rgb: np.ndarray, verts_px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the aligned S px crop (S, S, 3) uint8, its transform (2, 3) frame -> crop) of a face's mesh (V, 3) px.
    A frame much larger than the crop is sampled from a pyramid level (no aliasing), as identities' crops are."""
    from presenter.data.identities import aligned_crops

    crop, m = aligned_crops(rgb, verts_px)[SIZE]
    return crop, m


@dataclass(frozen=True)
class Source:
    """Who is put in: the generator's style code (1, N) and the person's neutral mesh (V, 3) cm."""
    styles: np.ndarray
    neutral: np.ndarray


class FaceSwapper:
    """Draws a source person's face over target frames; see the module docstring. impl "fast" runs
    the generator in ONNX Runtime, "ref" the PyTorch module."""

    def __init__(self, weights_dir: Path | None = None, *, impl: str = "fast", threads: int = 1) -> None:
        weights_dir = Path(weights_dir) if weights_dir else swap_weights_dir()
        if not (weights_dir / "model.safetensors").is_file():
            raise UserError(f"no face-swap generator in {weights_dir}: train one with "
                            "'presenter train generator --task swap' and pass its ema/ folder with --weights")
        self.model = load_generator(weights_dir)
        if self.model.cfg.crop_px != SIZE:
            raise UserError(f"{weights_dir}: generator crop_px is {self.model.cfg.crop_px}; the swap crop is {SIZE} px")
        self._session = generator_session(self.model, weights_dir, threads) if impl == "fast" else None

    def source(self, crops: np.ndarray, neutral: np.ndarray) -> Source:
        """The source from its aligned crops (K, S, S, 3) uint8 (`face_crop`) and its neutral mesh (V, 3) cm."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            styles = self.model.styles(x).mean(0, keepdim=True).numpy()
        return Source(styles, np.asarray(neutral, np.float32))

    def swap(self, rgb: np.ndarray, face: FittedFace, target_neutral: np.ndarray, src: Source) -> np.ndarray:
        """One target frame (H, W, 3) uint8 with its fitted face and the target's neutral mesh (V, 3) cm
        -> the frame with the source's face, (H, W, 3) uint8."""
        canon = src.neutral + (face.canon - target_neutral)              # the target's expression, the source's shape
        swapped = pose_mesh(canon, face.rotation, face.scale, face.translation)
        crop, m = face_crop(rgb, face.verts_px)
        v_swap, v_target = warp_points(swapped, m), warp_points(face.verts_px, m)
        mask = np.maximum(swap_mask(v_swap, SIZE), swap_mask(v_target, SIZE))
        out = run_generator(self.model, self._session, crop[None], mask[None], render_guidance(v_swap, SIZE)[None],
                            src.styles)[0]
        out = colour_match(out, crop.astype(np.float32), mask)
        painted = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        # Paste back through the 128 px crop's transform; the frame keeps its own pixels outside the mask.
        return paste_back(rgb, painted, m, cv2.GaussianBlur(mask, (0, 0), 1.0))

