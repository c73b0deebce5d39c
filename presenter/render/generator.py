"""The learned renderer: the rewired generator paints the lower face in the mouth window.

Per frame (legend: S = 128 window pixels, V = 468 vertices, N style width):
  posed mesh in the 256 px crop (`presenter.render.mesh.posed_mesh`, shared with the baseline)
  -> window coordinates -> guidance (S, S, 4) and paint mask (S, S)
  -> generator(idle crop's window, mask, guidance, the avatar's cached styles) -> window (S, S, 3)
  -> colour matched to the idle crop along the mask's edge -> back into the 256 crop
  -> feathered paste-back into the idle frame.

The paint mask is the training one: the lower face of the frame's mesh and of the same face with
the jaw dropped wide open (`generator_mask_256`), tapered to 0 at the window border. It depends
only on the idle frame, so it is computed once per frame. The styles come from the pack's
reference frames (mean over them), once per renderer.

impl "fast" runs the per-frame graph in ONNX Runtime (exported once per weights into the engine
cache); "ref" runs the PyTorch module. Tests compare the two.
"""
from __future__ import annotations

import hashlib
import threading
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from presenter.avatar.pack import AvatarPack
from presenter.errors import UserError
from presenter.face.align import (MOUTH_WINDOW_256, mouth_window, paste_back, place_mouth_window, to_mouth_window,
                                  warp_points)
from presenter.face.guidance import render_guidance
from presenter.models.generator import load_generator
from presenter.render.mesh import posed_mesh
from presenter.train.generator_data import EDGE_TAPER_PX, generator_mask_256, wide_open_mesh

CROP = 256
WINDOW = MOUTH_WINDOW_256[2]
EDGE_BAND = (0.05, 0.5)   # mask values whose pixels measure the colour offset (the known side of the edge)


def default_weights_dir() -> Path:
    """Where the shipped generator weights live (config.json, model.safetensors, MODEL_CARD.md)."""
    return Path(str(resources.files("presenter.models").joinpath("weights/generator")))


def window_taper(size: int = WINDOW) -> np.ndarray:
    """(size, size) float32: 1 inside, falling to 0 over EDGE_TAPER_PX at the window border (as in training)."""
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / EDGE_TAPER_PX, 0, 1)
    return np.outer(ramp, ramp).astype(np.float32)


def colour_match(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift the painted part of a composite so its colour meets the target's along the mask's edge.

    image = out * mask + target * (1 - mask) and target (S, S, 3) float32, mask (S, S). Where the mask
    is in EDGE_BAND, (image - target) / mask is the generator's own offset from the target; its mean
    (per channel) is taken out of the painted part: image - mean * mask.
    """
    band = (mask > EDGE_BAND[0]) & (mask < EDGE_BAND[1])
    if band.sum() < 16:
        return image
    offset = ((image[band] - target[band]) / mask[band][:, None]).mean(0)           # (3,)
    return image - offset[None, None, :] * mask[..., None]


class GeneratorRenderer:
    """Renders the mouth with the trained generator; see the module docstring. Thread-safe."""

    name = "generator (learned)"
    synthetic_label = "SYNTHETIC - generator"

    def __init__(self, pack: AvatarPack, weights_dir: Path | None = None, *, impl: str = "fast",
                 threads: int = 1) -> None:
        if impl not in ("fast", "ref"):
            raise ValueError(f"impl must be 'fast' or 'ref', got {impl!r}")
        weights_dir = Path(weights_dir) if weights_dir else default_weights_dir()
        self.model = load_generator(weights_dir)
        if self.model.cfg.crop_px != WINDOW:
            raise UserError(f"{weights_dir}: generator crop_px is {self.model.cfg.crop_px}, the mouth window is "
                            f"{WINDOW} px; use a live-preset generator")
        self.pack, self.impl = pack, impl
        self._frames = pack.frames
        self._crops = pack.crops[CROP]["crops"]
        f = pack.face
        self._verts, self._canon, self._align = f["verts_px"], f["canon"], f[f"align_{CROP}"]
        self._rot, self._scale, self._trans = f["rotation"], f["scale"], f["translation"]
        self.styles = self._reference_styles(pack.reference_indices)                  # (1, N)
        self._taper = window_taper()
        self._masks: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._session = self._onnx_session(weights_dir, threads) if impl == "fast" else None

    def _reference_styles(self, indices: list[int]) -> np.ndarray:
        """Mean per-layer styles (1, N) of the pack's reference frames' windows."""
        refs = np.stack([mouth_window(self._crops[i % len(self._crops)]) for i in indices or [0]])
        x = torch.from_numpy(refs).permute(0, 3, 1, 2).float() / 127.5 - 1.0           # (K, 3, S, S)
        with torch.no_grad():
            return self.model.styles(x).mean(0, keepdim=True).numpy()

    def _onnx_session(self, weights_dir: Path, threads: int):
        from presenter.engines.onnxruntime import cached_export, session
        from presenter.export.generator import export_generator_onnx

        # load_generator checked model.sha256 against the weights: key the engine on it and the config.
        digest = hashlib.sha256((weights_dir / "model.sha256").read_bytes() + (weights_dir / "config.json").read_bytes())
        path = cached_export("generator", digest.hexdigest()[:12], lambda p: export_generator_onnx(self.model, p))
        return session(path, threads)

    def paint_mask(self, i: int) -> np.ndarray:
        """Frame i's paint mask in the window (S, S) float32 (cached)."""
        with self._lock:
            if i not in self._masks:
                rest = warp_points(self._verts[i], self._align[i])
                full = generator_mask_256(rest, wide_open_mesh(rest))
                self._masks[i] = mouth_window(full) * self._taper
            return self._masks[i]

    def generate(self, target: np.ndarray, mask: np.ndarray, guidance: np.ndarray) -> np.ndarray:
        """One window: target (S, S, 3) uint8, mask (S, S), guidance (S, S, 4) -> composite (S, S, 3) float32 in [0, 255]."""
        t = (target.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]
        feed = {"target": np.ascontiguousarray(t), "mask": np.ascontiguousarray(mask[None, None], np.float32),
                "guidance": np.ascontiguousarray(guidance.transpose(2, 0, 1)[None], np.float32), "styles": self.styles}
        if self._session is not None:
            out = self._session.run(None, feed)[0]
        else:
            with torch.no_grad():
                out = self.model(*(torch.from_numpy(feed[k]) for k in ("target", "mask", "guidance", "styles"))).numpy()
        return (out[0].transpose(1, 2, 0) + 1.0) * 127.5

    def mouth_crop(self, index: int, mouth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crop (256, 256, 3) uint8, blend mask (256, 256) float32, posed mesh in crop px (V, 3)) for frame index."""
        i = index % len(self._frames)
        verts = posed_mesh(self._canon[i], self._rot[i], float(self._scale[i]), self._trans[i], self._align[i], mouth)
        mask = self.paint_mask(i)
        target = mouth_window(self._crops[i])
        out = self.generate(target, mask, render_guidance(to_mouth_window(verts), WINDOW))
        out = colour_match(out, target.astype(np.float32), mask)
        window = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        blend = np.zeros((CROP, CROP), np.float32)
        mouth_window(blend)[...] = mask
        return place_mouth_window(self._crops[i], window), blend, verts

    def render(self, index: int, mouth: np.ndarray | None) -> np.ndarray:
        i = index % len(self._frames)
        if mouth is None:
            return self._frames[i]
        crop, blend, _ = self.mouth_crop(i, mouth)
        return paste_back(self._frames[i], crop, self._align[i], blend)
