"""Baseline renderer (no learning): the avatar's own crop warped by the mouth-posed mesh, with a
drawn mouth interior (dark cavity, upper and lower teeth, tongue) where the lips part.

This is the corpus renderer's look and the live path's stand-in until the generator lands. It
works in the 256 px aligned crop and pastes the lower face back into the idle frame.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from presenter.avatar.pack import AvatarPack
from presenter.face.align import paste_back, warp_points
from presenter.face.canonical import LIPS_INNER
from presenter.face.masks import mouth_mask
from presenter.face.warp import warp_image
from presenter.motion.mouth import N_PARAMS, TEETH, TONGUE
from presenter.render.mesh import posed_mesh

CROP = 256
CAVITY_RGB = (52, 18, 22)
TEETH_RGB = (206, 198, 186)   # teeth inside a mouth are in shade
TEETH_GAP_SHARE = 0.3         # upper teeth cover at most this share of the opening's height
TEETH_WIDTH_SHARE = 0.3       # ... and the middle +-this share of the mouth's width
TONGUE_RGB = (172, 84, 88)
MIN_GAP_PX = 1.5   # below this the lips touch: only their seam is drawn
SEAM_DARKEN = 0.6  # how much the sealed lips' seam darkens the lip colour at its middle
_UPPER = list(LIPS_INNER[:11])           # corner 78 .. corner 308 along the upper inner lip
_LOWER = [LIPS_INNER[10]] + list(LIPS_INNER[11:]) + [LIPS_INNER[0]]  # 308 .. 78 along the lower


def _gap(verts: np.ndarray) -> float:
    return float(np.max(verts[_LOWER[::-1], 1] - verts[_UPPER, 1]))


def draw_mouth_interior(img: np.ndarray, verts: np.ndarray, teeth: float, tongue: float,
                        *, base_gap_px: float = 0.0) -> None:
    """Paint the opening bounded by the inner lips of `verts` (V, 2+) crop pixels into img, in place.

    base_gap_px: the opening the image already shows (a photo with parted lips). The painted
    interior fades in as the mouth opens beyond it, so the photo's own teeth stay at rest.
    """
    upper, lower = verts[_UPPER, :2], verts[_LOWER, :2]
    gap = _gap(verts)
    if gap < MIN_GAP_PX:
        draw_lip_seam(img, upper)
        return
    strength = np.clip((gap - base_gap_px) / max(base_gap_px, 2.0), 0.0, 1.0)
    if strength <= 0:
        return
    h, w = img.shape[:2]
    ss = 4  # sub-pixel bits for cv2 drawing
    poly = np.round(np.concatenate([upper, lower]) * (1 << ss)).astype(np.int32)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA, shift=ss)
    layer = np.empty_like(img)
    layer[:] = CAVITY_RGB
    # Teeth show in the middle of the mouth only (the corners are in shadow): upper ones from a
    # small opening, lower ones once it is wide.
    width = float(np.ptp(upper[:, 0]))
    band = min(TEETH_GAP_SHARE * gap, 0.07 * width) * teeth
    for contour, depth in ((upper, band), (lower, -0.5 * band if gap > 0.12 * width else 0.0)):
        mid = contour[np.abs(contour[:, 0] - contour[:, 0].mean()) <= TEETH_WIDTH_SHARE * width]
        if abs(depth) > 0.5 and len(mid) >= 2:
            tooth_row = np.concatenate([mid, mid[::-1] + np.array([0.0, depth])])
            cv2.fillPoly(layer, [np.round(tooth_row * (1 << ss)).astype(np.int32)], TEETH_RGB, cv2.LINE_AA,
                         shift=ss)
    if tongue > 0:
        c = lower.mean(0) - np.array([0.0, 0.25 * gap])
        axes = (int(0.3 * np.ptp(upper[:, 0]) * tongue) + 1, int(0.2 * gap * tongue) + 1)
        cv2.ellipse(layer, (int(c[0]), int(c[1])), axes, 0, 180, 360, TONGUE_RGB, -1, cv2.LINE_AA)
    a = cv2.GaussianBlur(mask, (3, 3), 0).astype(np.float32)[..., None] * (strength / 255.0)
    img[:] = (img * (1 - a) + layer * a).astype(np.uint8)


def draw_lip_seam(img: np.ndarray, upper: np.ndarray) -> None:
    """Darken the line where sealed lips meet (upper inner lip (K, 2), crop pixels), in place.

    Warped and inpainted lips that touch blur into one band with no line between them; real
    closed lips show a dark seam, and that seam is what a viewer (and the landmarker) reads as
    "sealed". Strongest mid-mouth, fading towards the corners."""
    h, w = img.shape[:2]
    ss = 4
    shade = np.zeros((h, w), np.uint8)
    pts = np.round(upper * (1 << ss)).astype(np.int32)
    along = np.abs(np.linspace(-1.0, 1.0, len(upper)))
    for k in range(len(upper) - 1):
        level = int(255 * (1.0 - 0.6 * max(along[k], along[k + 1]) ** 2))
        cv2.line(shade, tuple(pts[k]), tuple(pts[k + 1]), level, 1, cv2.LINE_AA, shift=ss)
    a = cv2.GaussianBlur(shade, (3, 3), 0).astype(np.float32)[..., None] / 255.0 * SEAM_DARKEN
    img[:] = (img * (1.0 - a)).astype(np.uint8)


def fill_lip_gap(img: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """The crop with the photographed opening between the inner lips inpainted from the lips around it,
    so that sealing the mouth squeezes lip, not teeth, into the seam."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(verts[list(LIPS_INNER), :2]).astype(np.int32)], 255)
    if not mask.any():
        return img
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return cv2.inpaint(img, mask, 3, cv2.INPAINT_TELEA)



class WarpBaselineRenderer:
    """Renders the mouth by warping the avatar's crop; see the module docstring."""

    name = "baseline warp (no learning)"
    synthetic_label = "SYNTHETIC - baseline renderer"

    def __init__(self, pack: AvatarPack) -> None:
        self.pack = pack
        self._frames = pack.frames
        self._crops = pack.crops[CROP]["crops"]
        self._masks = pack.crops[CROP]["mouth_mask"]
        f = pack.face
        self._verts, self._canon, self._align = f["verts_px"], f["canon"], f[f"align_{CROP}"]
        self._rot, self._scale, self._trans = f["rotation"], f["scale"], f["translation"]
        self._closable: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def warp(self, index: int, mouth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
        """Frame index's crop warped to the mouth, without an interior: (crop (S, S, 3) uint8, blend mask
        (S, S) float32, posed mesh in crop px (V, 3), (teeth, tongue, the photo's own lip gap px)).

        mouth: params (P,) deform the frame's own mouth (the photo's parted lips stay at rest), or
        displacements (V, 3) cm are added to the frame's closed rest (a SyncFormer's output).
        """
        i = index % len(self._frames)
        m = self._align[i]
        src = warp_points(self._verts[i], m)
        if mouth.shape == (N_PARAMS,):
            crop, hints = self._crops[i], (float(mouth[TEETH]), float(mouth[TONGUE]), _gap(src))
        else:
            crop, hints = self._closable_crop(i, src), (1.0, 0.4, 0.0)
        dst = posed_mesh(self._canon[i], self._rot[i], float(self._scale[i]), self._trans[i], m, mouth)
        mask = np.maximum(self._masks[i].astype(np.float32) / 255.0, mouth_mask(dst, CROP))
        return warp_image(crop, src, dst), mask, dst, hints

    def mouth_crop(self, index: int, mouth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(crop (S, S, 3) uint8, blend mask (S, S) float32, posed mesh in crop px (V, 3)): `warp`, with a
        drawn mouth interior."""
        out, mask, dst, (teeth, tongue, base) = self.warp(index, mouth)
        draw_mouth_interior(out, dst, teeth, tongue, base_gap_px=base)
        return out, mask, dst

    def _closable_crop(self, i: int, src: np.ndarray) -> np.ndarray:
        """Frame i's crop with a photographed lip gap inpainted, so the lips can close over it (cached)."""
        with self._lock:
            if i not in self._closable:
                self._closable[i] = fill_lip_gap(self._crops[i], src)
            return self._closable[i]

    def render(self, index: int, mouth: np.ndarray | None) -> np.ndarray:
        i = index % len(self._frames)
        if mouth is None:
            return self._frames[i]
        out, mask, _ = self.mouth_crop(i, mouth)
        return paste_back(self._frames[i], out, self._align[i], mask)
