"""The learned renderer: a warp of the avatar moves the skin, the rewired generator paints the mouth.

Per frame (legend: S = 128 window pixels, V = 468 vertices, N style width):
  the baseline's warp of the idle crop to the posed mesh (`WarpBaselineRenderer.warp`: jaw, chin
  and cheeks move with the mouth, the photo's texture kept; no drawn interior)
  -> window coordinates -> guidance (S, S, 4) and paint mask (S, S): the commanded mesh's lips mask
  -> generator(warped window, mask, guidance, the avatar's cached styles) -> window (S, S, 3)
  -> colour matched to the warped window along the mask's edge -> back into the 256 crop
  -> feathered paste-back into the idle frame (the warp's lower-face mask).

Why the lips mask and not the whole lower face: measured on test identities (`presenter eval
generator`, docs/generator.md), the live preset painting the whole lower face from style vectors
alone loses the skin's texture (stubble, wrinkles) and scored below the warp; the warp keeps it
and the generator draws what a warp cannot, the lips and the inside of the mouth. The generator
is trained on both masks (`GeneratorPairs(lips_share=...)`). The styles come from the pack's
reference frames (mean over them), cached in the pack (`styles.npz`, keyed by the weights).

impl "fast" runs the per-frame graph in ONNX Runtime (exported once per weights into the engine
cache); "ref" runs the PyTorch module. Tests compare the two.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from presenter.avatar.pack import AvatarPack
from presenter.errors import UserError
from presenter.face.align import MOUTH_WINDOW_256, mouth_window, paste_back, place_mouth_window, to_mouth_window
from presenter.face.guidance import render_guidance
from presenter.face.masks import lips_mask
from presenter.models.generator import Generator, load_generator
from presenter.render.warp_baseline import WarpBaselineRenderer
from presenter.train.generator_data import EDGE_TAPER_PX

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

CROP = 256
WINDOW = MOUTH_WINDOW_256[2]
EDGE_BAND = (0.05, 0.5)   # mask values whose pixels measure the colour offset (the known side of the edge)
# The paint mask's margin around the lips, a fraction of the mouth's width. Trained at 0.16
# (masks.LIPS_GROW); painting a little less keeps more of the warped photo around the lips and
# measured better: a sealed command on the default avatar reads sealed on 100 of 100 idle frames
# (89 at 0.16; 11 frames at 0.030-0.034 inter-ocular, just over the bar), and on 24 test
# identities PSNR 27.09 vs 27.10 dB, SSIM 0.850, identity 0.165, lip-gap r 0.996, sealed 1.000 at both.
PAINT_GROW = 0.14


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


@dataclass(frozen=True)
class PreparedWindow:
    """One frame's generator inputs and what its paste-back needs (S window px, 256 crop px)."""
    index: int                 # idle-loop frame
    warped: np.ndarray         # (256, 256, 3) uint8, the warped crop
    blend: np.ndarray          # (256, 256) float32, the paste-back mask
    verts: np.ndarray          # (V, 3) posed mesh in crop px
    target: np.ndarray         # (S, S, 3) uint8, the warped window
    mask: np.ndarray           # (S, S) float32, the paint mask
    guidance: np.ndarray       # (S, S, 4) float32


def generator_session(model: Generator, weights_dir: Path, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime session of a loaded generator's per-frame graph, exported once per weights
    (keyed by model.sha256 and config.json, which load_generator checked) into the engine cache."""
    from presenter.engines.onnxruntime import cached_export, session
    from presenter.export.generator import export_generator_onnx

    digest = hashlib.sha256((weights_dir / "model.sha256").read_bytes() + (weights_dir / "config.json").read_bytes())
    path = cached_export("generator", digest.hexdigest()[:12], lambda p: export_generator_onnx(model, p))
    return session(path, threads)


def run_generator(model: Generator, sess: ort.InferenceSession | None, target: np.ndarray, mask: np.ndarray,
                  guidance: np.ndarray, styles: np.ndarray) -> np.ndarray:
    """B crops in one network call: target (B, S, S, 3) uint8, mask (B, S, S), guidance (B, S, S, 4),
    styles (B, N) -> composite (B, S, S, 3) float32 in [0, 255]; sess None runs the torch module."""
    t = (target.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
    feed = {"target": np.ascontiguousarray(t), "mask": np.ascontiguousarray(mask[:, None], np.float32),
            "guidance": np.ascontiguousarray(guidance.transpose(0, 3, 1, 2), np.float32),
            "styles": np.ascontiguousarray(styles, np.float32)}
    if sess is not None:
        out = sess.run(None, feed)[0]
    else:
        with torch.no_grad():
            out = model(*(torch.from_numpy(feed[k]) for k in ("target", "mask", "guidance", "styles"))).numpy()
    return (out.transpose(0, 2, 3, 1) + 1.0) * 127.5


PACK_GENERATOR = "generator"   # a pack's own fine-tuned generator (`presenter avatar finetune`), if any


def pack_weights_dir(pack: AvatarPack) -> Path | None:
    """The pack's fine-tuned generator folder when it has one (it then beats the shipped weights), else None."""
    d = pack.root / PACK_GENERATOR
    return d if (d / "model.safetensors").is_file() else None


def reference_styles(pack: AvatarPack, model) -> np.ndarray:
    """Mean per-layer styles (1, N) of the pack's reference frames' mouth windows."""
    crops = pack.crops[CROP]["crops"]
    refs = np.stack([mouth_window(crops[i % len(crops)]) for i in pack.reference_indices or [0]])
    x = torch.from_numpy(refs).permute(0, 3, 1, 2).float() / 127.5 - 1.0              # (K, 3, S, S)
    with torch.no_grad():
        return model.styles(x).mean(0, keepdim=True).numpy()


def pack_styles(pack: AvatarPack, model, weights_dir: Path) -> np.ndarray:
    """The pack's style codes for these weights: read from the pack, or computed once and stored in it."""
    from presenter.avatar.pack import read_styles, write_styles

    key = (Path(weights_dir) / "model.sha256").read_text().split()[0]
    styles = read_styles(pack, key)
    if styles is None:
        styles = reference_styles(pack, model)
        if write_styles(pack, key, styles):
            log.info("stored the generator's style codes in %s (first use of these weights with this pack)",
                     pack.root)
    return styles


class GeneratorRenderer:
    """Renders the mouth with the trained generator; see the module docstring. Thread-safe."""

    name = "generator (learned)"
    synthetic_label = "SYNTHETIC - generator"

    def __init__(self, pack: AvatarPack, weights_dir: Path | None = None, *, impl: str = "fast",
                 threads: int = 1) -> None:
        if impl not in ("fast", "ref"):
            raise ValueError(f"impl must be 'fast' or 'ref', got {impl!r}")
        weights_dir = Path(weights_dir) if weights_dir else pack_weights_dir(pack) or default_weights_dir()
        self.model = load_generator(weights_dir)
        if self.model.cfg.crop_px != WINDOW:
            raise UserError(f"{weights_dir}: generator crop_px is {self.model.cfg.crop_px}, the mouth window is "
                            f"{WINDOW} px; use a live-preset generator")
        self.pack, self.impl = pack, impl
        self._frames = pack.frames
        self._crops = pack.crops[CROP]["crops"]
        self._align = pack.face[f"align_{CROP}"]
        self._warp = WarpBaselineRenderer(pack)
        self.styles = pack_styles(pack, self.model, weights_dir)                       # (1, N)
        self._taper = window_taper()
        self._session = generator_session(self.model, weights_dir, threads) if impl == "fast" else None

    @property
    def fallback(self) -> WarpBaselineRenderer:
        """The cheaper renderer a live stream switches to while renders miss their frames: the
        baseline warp with its drawn mouth (about half the CPU), on the same pack."""
        return self._warp

    def paint_mask(self, verts: np.ndarray) -> np.ndarray:
        """The paint mask (S, S) float32 of a posed mesh (V, 3) in crop px: its lips mask in the window, tapered."""
        return lips_mask(to_mouth_window(verts), WINDOW, PAINT_GROW) * self._taper

    def generate(self, target: np.ndarray, mask: np.ndarray, guidance: np.ndarray) -> np.ndarray:
        """One window: target (S, S, 3) uint8, mask (S, S), guidance (S, S, 4) -> composite (S, S, 3) float32 in [0, 255]."""
        return self.generate_batch(target[None], mask[None], guidance[None])[0]

    def generate_batch(self, target: np.ndarray, mask: np.ndarray, guidance: np.ndarray,
                       styles: np.ndarray | None = None) -> np.ndarray:
        """B windows in one network call (the cross-session batcher's seam): target (B, S, S, 3) uint8,
        mask (B, S, S), guidance (B, S, S, 4), styles (B, N) (None: this avatar's) -> (B, S, S, 3) float32."""
        styles = np.repeat(self.styles, len(target), axis=0) if styles is None else styles
        return run_generator(self.model, self._session, target, mask, guidance, styles)

    def prepare(self, index: int, mouth: np.ndarray) -> PreparedWindow:
        """The per-frame work before the network: warp, paint mask, masked target and guidance of frame index."""
        i = index % len(self._frames)
        warped, blend, verts, _ = self._warp.warp(i, mouth)
        return PreparedWindow(i, warped, blend, verts, mouth_window(warped), self.paint_mask(verts),
                              render_guidance(to_mouth_window(verts), WINDOW))

    def finish_crop(self, prep: PreparedWindow, out: np.ndarray) -> np.ndarray:
        """The network's window out (S, S, 3) float32 -> colour-matched mouth crop (256, 256, 3) uint8."""
        out = colour_match(out, prep.target.astype(np.float32), prep.mask)
        window = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return place_mouth_window(prep.warped, window)

    def finish(self, prep: PreparedWindow, out: np.ndarray) -> np.ndarray:
        """The network's window out (S, S, 3) float32 -> the full frame (H, W, 3) uint8, as `render` returns it."""
        i = prep.index
        return paste_back(self._frames[i], self.finish_crop(prep, out), self._align[i], prep.blend)

    def mouth_crop(self, index: int, mouth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crop (256, 256, 3) uint8, blend mask (256, 256) float32, posed mesh in crop px (V, 3)) for frame index."""
        prep = self.prepare(index, mouth)
        out = self.generate(prep.target, prep.mask, prep.guidance)
        return self.finish_crop(prep, out), prep.blend, prep.verts

    def render(self, index: int, mouth: np.ndarray | None) -> np.ndarray:
        i = index % len(self._frames)
        if mouth is None:
            return self._frames[i]
        prep = self.prepare(i, mouth)
        return self.finish(prep, self.generate(prep.target, prep.mask, prep.guidance))
