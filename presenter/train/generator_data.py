"""Training pairs for the mouth generator (issue 15): the GAN's graded mouth sequences and real portraits.

A pair is built in the generator's window (`presenter.face.align.MOUTH_WINDOW_256`, 128 px of the
256 px aligned crop, lower face):
  target     a frame of an identity's graded sequence (sealed ... wide open)
  guidance   that frame's fitted mesh drawn by `presenter.face.guidance.render_guidance`
  mask       where the generator paints: (a `lips_share` of the pairs) the lips mask of the target's mesh,
             as at run time, where a warp of the avatar moves the skin around it; otherwise
             the lower face of the target's mesh and of the same face with
             the jaw fully dropped (`wide_open_mesh`), feathered, zero at the window border and where
             the window lies outside the source frame (the GAN's 512 px frames end under the chin: the
             bottom 12-17 rows of every window are the frame's last row replicated; outside the mask
             the target is copied, so those rows cost no loss)
  reference  another frame of the same identity, at a different opening (teeth, lips, skin)
  weight     loss weight: 1, plus LIP_WEIGHT inside the target's outer-lip polygon grown LIP_GROW_PX
A share of the pairs (`portrait_share`) are self-reconstructions of the shipped real portraits: the
target is the portrait, the reference a differently augmented copy. The astronaut (the default
avatar) is a train portrait; Grace Hopper, the SyncFormer's held-out real identity, is test only.

Data: `presenter data mouth-prior` writes OUT/sequences/<id>/{seq.npz, frame_KK.jpg} and
sequences/index.json with each identity's split. The windows are cut once from the 512 px frames
(CACHE_MARGIN_PX wider on each side, room for the scale/shift augmentation) and kept with their
window-space meshes in sequences/gen_cache_128.npz (JPEG-coded patches: about 10 KB a frame, so
200 identities fit in about 20 MB and travel to a GPU machine). It is rebuilt when index.json changes.

Augmentation (train): one geometric transform (scale and shift up to AUG_GEOMETRY, mirror) and one
colour jitter for all images of a pair; a mirrored guidance has u -> 1 - u where the mesh is drawn,
so u still runs left -> right of the image. Every random choice comes from (seed, epoch, index).

Legend: N identities, K frames per sequence, V = 468 mesh vertices, P cached patch side, S crop_px.
Coordinates are pixels, x right, y down; "window" pixels are the 256 px crop's, shifted by the
window's origin; the output is the window resampled to S (S = 128: 1:1).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from presenter.data.identities import SPLITS
from presenter.errors import UserError
from presenter.face.align import MOUTH_WINDOW_256, align_transform, to_mouth_window, warp_points
from presenter.face.canonical import LIPS_OUTER, N_VERTICES
from presenter.face.fit import fit_points, pose_mesh
from presenter.face.guidance import render_guidance
from presenter.face.masks import lips_mask, mouth_mask

log = logging.getLogger(__name__)

CACHE_NAME = "gen_cache_128.npz"
CACHE_VERSION = 2
CACHE_MARGIN_PX = 8        # cached patches extend the window this far on each side (augmentation room)
CACHE_JPEG_QUALITY = 95    # of the cached patches; the frames themselves are JPEG 95
AUG_GEOMETRY = 0.04        # scale 1 +- this, shift +- this of the window side
AUG_GAIN = 0.06            # colour jitter: per-channel gain 1 +- this
AUG_BIAS = 0.04            # brightness offset +- this (images in [0, 1])
AUG_SATURATION = 0.1       # saturation 1 +- this
LIP_WEIGHT = 4.0           # extra loss weight inside the outer lips
LIP_GROW_PX = 3            # outer-lip polygon grown by this (window pixels) for the weight map
EDGE_TAPER_PX = 4          # the mask falls to 0 over this many pixels at the window border; small, because a
                           # dropped chin comes within 9 px of the window's bottom edge
OUTSIDE_FEATHER_PX = 2     # the mask fades to 0 over this many pixels before the frame's edge
MIN_REFERENCE_GAP_CM = 0.3  # a reference opening differs from the target's by at least this, when one does
PORTRAIT_SPLITS = {"astronaut": "train", "hopper": "test"}   # the shipped real portraits and their split
WIDE_OPEN_JAW = 1.0        # `presenter.motion.mouth` jaw command of the mask's wide-open mesh (2.2 cm drop)


def identities_by_split(sequences_root: str | Path) -> dict[str, list[str]]:
    """Exported sequence ids by split, {"train": [...], "val": [...], "test": [...]}, in export order."""
    path = Path(sequences_root) / "index.json"
    if not path.is_file():
        raise UserError(f"{sequences_root} has no index.json; export sequences with "
                        "'presenter data mouth-prior -o OUT' and pass OUT/sequences")
    out: dict[str, list[str]] = {name: [] for name, _ in SPLITS}
    for s in json.loads(path.read_text())["sequences"]:
        out[s["split"]].append(s["id"])
    return out


def wide_open_mesh(verts_256: np.ndarray) -> np.ndarray:
    """The same face with the jaw fully dropped (V, 3), same pixels and pose as verts_256 (V, 3).

    Refitted from the mesh itself (its 256 px pixels), deformed by the mouth model's jaw and posed back.
    """
    from presenter.motion.mouth import JAW, N_PARAMS, deform

    fitted = fit_points(np.asarray(verts_256, np.float64) * np.array([1.0, 1.0, -1.0]), np.eye(4))
    params = np.zeros(N_PARAMS, np.float32)
    params[JAW] = WIDE_OPEN_JAW
    return pose_mesh(deform(fitted.canon, params), fitted.rotation, fitted.scale, fitted.translation)


def generator_mask_256(verts_256: np.ndarray, open_verts_256: np.ndarray) -> np.ndarray:
    """Paint mask (256, 256) float32 in the 256 px crop: lower face of the mesh and of its wide-open twin."""
    return np.maximum(mouth_mask(verts_256, 256), mouth_mask(open_verts_256, 256))


def _edge_taper(size: int) -> np.ndarray:
    ramp = np.clip(np.minimum(np.arange(size), np.arange(size)[::-1]) / EDGE_TAPER_PX, 0, 1)   # 0 on the edge pixels
    return np.outer(ramp, ramp).astype(np.float32)


# --- cache -------------------------------------------------------------------------------------

def _window_patch(image: np.ndarray, align_256: np.ndarray) -> np.ndarray:
    """The window plus CACHE_MARGIN_PX on each side (P, P, 3) cut from a frame through its 256 px transform.

    Samples the image pyramid level that keeps the warp from shrinking more than 2x, as the
    identities' crops do (`presenter.data.identities.aligned_crops`).
    """
    x0, y0, side = MOUTH_WINDOW_256
    p = side + 2 * CACHE_MARGIN_PX
    m = np.asarray(align_256, np.float64).copy()
    m[:, 2] -= (x0 - CACHE_MARGIN_PX, y0 - CACHE_MARGIN_PX)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    src = image
    while scale * 2 <= 1.0:
        src = cv2.pyrDown(src)
        m[:, :2] *= 2.0
        scale *= 2.0
    return cv2.warpAffine(src, m, (p, p), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _portrait_images() -> dict[str, np.ndarray]:
    """The shipped public-domain portraits, RGB uint8, loaded as `presenter.data.synth` does."""
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.asarray(Image.open(f).convert("RGB"))
    return {"astronaut": data.astronaut(), "hopper": hopper}


def _portrait_arrays() -> dict[str, np.ndarray]:
    """Patches, window meshes and wide-open meshes of the shipped portraits (landmarker fit)."""
    from presenter.face.fit import fit_face
    from presenter.face.landmarker import FaceLandmarker

    names, patches, verts, opens, to_window, sizes = [], [], [], [], [], []
    with FaceLandmarker("image") as lm:
        for name, image in _portrait_images().items():
            faces = lm.detect(np.ascontiguousarray(image))
            if not faces:
                raise RuntimeError(f"the landmarker found no face in the shipped portrait {name}")
            v = fit_face(faces[0]).verts_px
            m = align_transform(v, 256)
            v256 = warp_points(v, m)
            names.append(name)
            patches.append(_window_patch(image, m))
            verts.append(to_mouth_window(v256))
            opens.append(to_mouth_window(wide_open_mesh(v256)))
            to_window.append(_frame_to_window(m))
            sizes.append(image.shape[:2])
    return {"portrait_names": np.array(names), "portrait_patches": np.stack(patches),
            "portrait_verts": np.stack(verts), "portrait_open_verts": np.stack(opens),
            "portrait_to_window": np.stack(to_window), "portrait_frame_hw": np.array(sizes, np.int32)}


def _frame_to_window(align_256: np.ndarray) -> np.ndarray:
    """(2, 3) frame pixels -> window pixels."""
    m = np.asarray(align_256, np.float32).copy()
    m[:, 2] -= np.array(MOUTH_WINDOW_256[:2], np.float32)
    return m


def _encode(patch: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", patch[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, CACHE_JPEG_QUALITY])
    if not ok:
        raise OSError("could not JPEG-encode a cache patch")
    return buf.tobytes()


def _cache_key(sequences_root: Path) -> str:
    h = hashlib.sha256((sequences_root / "index.json").read_bytes())
    h.update(json.dumps([CACHE_VERSION, MOUTH_WINDOW_256, CACHE_MARGIN_PX, CACHE_JPEG_QUALITY]).encode())
    return h.hexdigest()


def build_cache(sequences_root: str | Path, *, progress: bool = False) -> Path:
    """Cut every exported frame's window patch and mesh into sequences_root/CACHE_NAME (atomic write)."""
    from tqdm import tqdm

    root = Path(sequences_root)
    ids, splits = [], []
    for split, members in identities_by_split(root).items():
        ids += members
        splits += [split] * len(members)
    blobs: list[bytes] = []
    verts, opens, found, opening, to_window, sizes = [], [], [], [], [], []
    n_frames = None
    for ident in tqdm(ids, desc="generator cache", unit="id", disable=not progress):
        with np.load(root / ident / "seq.npz") as z:
            seq = {k: z[k] for k in ("found", "opening_cm", "align_256", "verts_256")}
        k = len(seq["found"])
        if n_frames not in (None, k):
            raise UserError(f"{root / ident}: {k} frames where other sequences have {n_frames}; "
                            "export all sequences with the same --steps")
        n_frames = k
        for i in range(k):
            bgr = cv2.imread(str(root / ident / f"frame_{i:02d}.jpg"), cv2.IMREAD_COLOR)
            if bgr is None:
                raise UserError(f"{root / ident / f'frame_{i:02d}.jpg'} is missing or damaged; rerun "
                                "'presenter data mouth-prior' with the same options to restore it")
            blobs.append(_encode(_window_patch(bgr[..., ::-1], seq["align_256"][i])))
        sizes.append(bgr.shape[:2])
        ok = seq["found"].astype(bool)
        verts.append(to_mouth_window(seq["verts_256"]))
        first = int(np.argmax(ok))                    # the most sealed frame found: the face at rest
        opens.append(to_mouth_window(wide_open_mesh(seq["verts_256"][first])) if ok.any()
                     else np.zeros((N_VERTICES, 3), np.float32))
        found.append(ok)
        opening.append(seq["opening_cm"].astype(np.float32))
        to_window.append(np.stack([_frame_to_window(m) for m in seq["align_256"]]))
    if not ids:
        raise UserError(f"{root}/index.json lists no sequences")
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    arrays = {"key": np.array(_cache_key(root)), "ids": np.array(ids), "splits": np.array(splits),
              "jpeg": np.frombuffer(b"".join(blobs), np.uint8), "jpeg_offsets": offsets,
              "verts": np.stack(verts), "open_verts": np.stack(opens), "found": np.stack(found),
              "opening_cm": np.stack(opening), "to_window": np.stack(to_window),
              "frame_hw": np.array(sizes, np.int32), **_portrait_arrays()}
    path = root / CACHE_NAME
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    log.info("generator cache: %d identities, %d frames, %.1f MB -> %s", len(ids), len(blobs),
             path.stat().st_size / 1e6, path)
    return path


@dataclass
class _Cache:
    ids: np.ndarray          # (N,) str
    splits: np.ndarray       # (N,) str
    patches: np.ndarray      # (N, K, P, P, 3) uint8 RGB
    verts: np.ndarray        # (N, K, V, 3) float32 window pixels
    open_verts: np.ndarray   # (N, V, 3) float32 window pixels: the rest face with the jaw dropped
    found: np.ndarray        # (N, K) bool
    opening_cm: np.ndarray   # (N, K) float32
    to_window: np.ndarray    # (N, K, 2, 3) float32: frame pixels -> window pixels
    frame_hw: np.ndarray     # (N, 2) int: the frames' height and width
    portraits: dict[str, dict[str, np.ndarray]]   # name -> patch (P, P, 3), verts (V, 3), open_verts (V, 3),
                                                  # to_window (2, 3), frame_hw (2,)


_LOADED: dict[tuple[str, str], _Cache] = {}


def load_cache(sequences_root: str | Path, *, progress: bool = False) -> _Cache:
    """The decoded cache (built or rebuilt first when missing or stale); shared within the process."""
    root = Path(sequences_root)
    key = _cache_key(root)
    if (str(root), key) in _LOADED:
        return _LOADED[(str(root), key)]
    path = root / CACHE_NAME
    fresh = False
    if path.is_file():
        with np.load(path) as z:
            fresh = str(z["key"]) == key
    if not fresh:
        build_cache(root, progress=progress)
    with np.load(path) as z:
        a = {k: z[k] for k in z.files}
    n, k = a["found"].shape
    blob, off = a["jpeg"], a["jpeg_offsets"]
    patches = np.stack([cv2.imdecode(blob[off[i]:off[i + 1]], cv2.IMREAD_COLOR)[..., ::-1] for i in range(n * k)])
    cache = _Cache(ids=a["ids"], splits=a["splits"], patches=patches.reshape(n, k, *patches.shape[1:]),
                   verts=a["verts"], open_verts=a["open_verts"], found=a["found"], opening_cm=a["opening_cm"],
                   to_window=a["to_window"], frame_hw=a["frame_hw"],
                   portraits={str(name): {"patch": a["portrait_patches"][i], "verts": a["portrait_verts"][i],
                                          "open_verts": a["portrait_open_verts"][i],
                                          "to_window": a["portrait_to_window"][i],
                                          "frame_hw": a["portrait_frame_hw"][i]}
                              for i, name in enumerate(a["portrait_names"])})
    _LOADED.clear()                  # one corpus per process is the use; do not keep stale ones
    _LOADED[(str(root), key)] = cache
    return cache


# --- pairs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Geometry:
    """One augmentation of the window: scale about its centre, shift (window pixels), mirror."""
    scale: float = 1.0
    shift_px: tuple[float, float] = (0.0, 0.0)
    mirror: bool = False

    def matrix(self, out_px: int) -> np.ndarray:
        """(2, 3) window pixels -> output pixels (before the mirror, which flips the finished images)."""
        side = MOUTH_WINDOW_256[2]
        c = (side - 1) / 2
        k = out_px / side
        s = self.scale * k
        return np.array([[s, 0.0, (c + self.shift_px[0]) * k - s * c + (k - 1) / 2],
                         [0.0, s, (c + self.shift_px[1]) * k - s * c + (k - 1) / 2]], np.float32)


@dataclass(frozen=True)
class Colour:
    """One colour jitter: per-channel gain, saturation, brightness offset (images in [0, 1])."""
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    saturation: float = 1.0
    bias: float = 0.0

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> float32 (H, W, 3) in [0, 1], jittered."""
        x = rgb.astype(np.float32) / 255.0
        grey = x.mean(axis=2, keepdims=True)
        x = (grey + (x - grey) * self.saturation) * np.array(self.gain, np.float32) + self.bias
        return np.clip(x, 0.0, 1.0)


@dataclass(frozen=True)
class Plan:
    """Every choice behind one pair; `GeneratorPairs.plan(index)` draws it from (seed, epoch, index)."""
    identity: str                 # sequence id, or a portrait's name
    portrait: bool
    target_frame: int             # frame of the sequence (0 for a portrait)
    reference_frame: int
    geometry: Geometry            # of the target (and of a sequence pair's reference)
    colour: Colour
    reference_geometry: Geometry  # a portrait's reference is augmented on its own
    reference_colour: Colour
    lips: bool = False            # paint mask: the lips mask (run time's) rather than the lower face


def _random_geometry(rng: np.random.Generator) -> Geometry:
    side = MOUTH_WINDOW_256[2]
    return Geometry(scale=float(rng.uniform(1 - AUG_GEOMETRY, 1 + AUG_GEOMETRY)),
                    shift_px=tuple(float(v) for v in rng.uniform(-AUG_GEOMETRY, AUG_GEOMETRY, 2) * side),
                    mirror=bool(rng.random() < 0.5))


def _random_colour(rng: np.random.Generator) -> Colour:
    return Colour(gain=tuple(float(g) for g in rng.uniform(1 - AUG_GAIN, 1 + AUG_GAIN, 3)),
                  saturation=float(rng.uniform(1 - AUG_SATURATION, 1 + AUG_SATURATION)),
                  bias=float(rng.uniform(-AUG_BIAS, AUG_BIAS)))


class GeneratorPairs(Dataset):
    """Pairs of one split as dicts of float32 tensors (S = crop_px):

    target (3, S, S) in [-1, 1]; guidance (4, S, S) in [0, 1] (u, v, shade, coverage);
    mask (1, S, S) in [0, 1]; reference (3, S, S) in [-1, 1]; weight (1, S, S) >= 1.

    Items 0 .. n_sequence_pairs - 1 are the found frames of the split's sequences, in order; the
    rest are portrait self-reconstructions (`portrait_share` of all items, when the split has a
    portrait). `set_epoch` changes the draws of every item; the same (seed, epoch, index) gives
    the same pair.
    """

    def __init__(self, sequences_root: str | Path, split: str, *, crop_px: int = 128, seed: int = 0,
                 augment: bool = True, portrait_share: float = 0.05, lips_share: float = 0.0) -> None:
        if split not in {name for name, _ in SPLITS}:
            raise UserError(f"split must be train, val or test, got {split!r}")
        if not 0.0 <= portrait_share < 1.0:
            raise UserError(f"portrait_share must be in [0, 1), got {portrait_share}")
        if not 0.0 <= lips_share <= 1.0:
            raise UserError(f"lips_share must be in [0, 1], got {lips_share}")
        self.split, self.crop_px, self.seed, self.augment = split, crop_px, seed, augment
        self.lips_share = lips_share
        self.epoch = 0
        self.cache = load_cache(sequences_root)
        self.rows = np.flatnonzero(self.cache.splits == split)                      # identities of the split
        self.row_of = {str(self.cache.ids[r]): int(r) for r in self.rows}
        self.frames = [(int(r), int(f)) for r in self.rows for f in np.flatnonzero(self.cache.found[r])]
        self.portraits = [n for n, s in PORTRAIT_SPLITS.items() if s == split and n in self.cache.portraits]
        share = portrait_share if self.portraits else 0.0
        self.n_portrait_pairs = max(1, int(round(len(self.frames) * share / (1.0 - share)))) if share else 0
        self.taper = _edge_taper(crop_px)

    def __len__(self) -> int:
        return len(self.frames) + self.n_portrait_pairs

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations and references (call once per epoch)."""
        self.epoch = int(epoch)

    def describe(self) -> dict[str, Any]:
        """Counts of this split: identities, sequence pairs, portrait pairs and which portraits."""
        return {"split": self.split, "identities": len(self.rows), "sequence_pairs": len(self.frames),
                "portrait_pairs": self.n_portrait_pairs, "portraits": list(self.portraits), "pairs": len(self)}

    def plan(self, index: int) -> Plan:
        """The choices behind item index (identity, frames, augmentation), from (seed, epoch, index)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        geo, col = (_random_geometry(rng), _random_colour(rng)) if self.augment else (Geometry(), Colour())
        if index >= len(self.frames):
            name = self.portraits[(index - len(self.frames)) % len(self.portraits)]
            return Plan(name, True, 0, 0, geo, col, _random_geometry(rng), _random_colour(rng),
                        lips=bool(rng.random() < self.lips_share))
        row, frame = self.frames[index]
        ok = np.flatnonzero(self.cache.found[row])
        others = ok[ok != frame]
        if len(others) == 0:
            raise UserError(f"identity {self.cache.ids[row]} has one usable frame; a pair needs two")
        gap = np.abs(self.cache.opening_cm[row, others] - self.cache.opening_cm[row, frame])
        far = others[gap >= MIN_REFERENCE_GAP_CM]
        ref = int(rng.choice(far if len(far) else others))
        return Plan(str(self.cache.ids[row]), False, frame, ref, geo, col, geo, col,
                    lips=bool(rng.random() < self.lips_share))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.render(self.plan(index))

    def render(self, p: Plan) -> dict[str, torch.Tensor]:
        """The pair a plan describes (see the class docstring for the keys)."""
        if p.portrait:
            src = self.cache.portraits[p.identity]
            target_patch = ref_patch = src["patch"]
            verts, open_verts, to_window, frame_hw = src["verts"], src["open_verts"], src["to_window"], src["frame_hw"]
        else:
            row = self.row_of[p.identity]
            target_patch = self.cache.patches[row, p.target_frame]
            ref_patch = self.cache.patches[row, p.reference_frame]
            verts, open_verts = self.cache.verts[row, p.target_frame], self.cache.open_verts[row]
            to_window, frame_hw = self.cache.to_window[row, p.target_frame], self.cache.frame_hw[row]
        target = p.colour.apply(self._warp(target_patch, p.geometry))
        reference = p.reference_colour.apply(self._warp(ref_patch, p.reference_geometry))
        m = p.geometry.matrix(self.crop_px)
        v = warp_points(verts, m)                       # z scaled with x, y: the normals keep their shape
        guidance = render_guidance(v, self.crop_px)
        mask = self._mask(verts, None if p.lips else open_verts, m) * self._inside(to_window, frame_hw, m)
        weight = lip_weight(v, self.crop_px)
        if p.geometry.mirror:
            flip = (np.ascontiguousarray(a[:, ::-1]) for a in (target, guidance, mask, weight))
            target, guidance, mask, weight = flip
            cov = guidance[..., 3] > 0
            guidance[..., 0][cov] = 1.0 - guidance[..., 0][cov]
        if p.reference_geometry.mirror:
            reference = np.ascontiguousarray(reference[:, ::-1])
        return {"target": chw(target * 2.0 - 1.0), "guidance": chw(guidance), "mask": chw(mask[..., None]),
                "reference": chw(reference * 2.0 - 1.0), "weight": chw(weight[..., None])}

    def _warp(self, patch: np.ndarray, geo: Geometry) -> np.ndarray:
        """Cached patch (P, P, 3) -> augmented window (S, S, 3), uint8."""
        m = geo.matrix(self.crop_px).astype(np.float64)
        m[:, 2] -= m[:, :2] @ np.full(2, CACHE_MARGIN_PX, np.float64)    # patch pixel = window pixel + margin
        return cv2.warpAffine(patch, m, (self.crop_px, self.crop_px), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)

    def _mask(self, verts: np.ndarray, open_verts: np.ndarray | None, m: np.ndarray) -> np.ndarray:
        """Paint mask (S, S): drawn in the 256 px crop (the masks' margins are fractions of it), then warped.
        The lower face of verts and open_verts, or (open_verts None) the lips mask of verts."""
        x0, y0, _ = MOUTH_WINDOW_256
        shift = np.array([x0, y0], np.float32)
        full = (lips_mask(verts[:, :2] + shift, 256) if open_verts is None
                else generator_mask_256(verts[:, :2] + shift, open_verts[:, :2] + shift))
        to_out = m.astype(np.float64).copy()
        to_out[:, 2] -= to_out[:, :2] @ shift                            # 256 px crop -> output pixels
        out = cv2.warpAffine(full, to_out, (self.crop_px, self.crop_px), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return np.clip(out, 0.0, 1.0) * self.taper

    def _inside(self, to_window: np.ndarray, frame_hw: np.ndarray, m: np.ndarray) -> np.ndarray:
        """(S, S) 1 where the output samples the source frame, fading to 0 OUTSIDE_FEATHER_PX before its edge."""
        to_out = np.concatenate([m.astype(np.float64), [[0, 0, 1]]]) @ np.concatenate([to_window, [[0, 0, 1]]])
        h, w = (int(v) for v in frame_hw)
        inside = cv2.warpAffine(np.ones((h, w), np.uint8), to_out[:2], (self.crop_px, self.crop_px),
                                flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)          # pixels to the nearest outside pixel
        return np.clip(dist / (OUTSIDE_FEATHER_PX + 1), 0.0, 1.0)

def lip_weight(verts_out: np.ndarray, size: int) -> np.ndarray:
    """Loss weight (size, size): 1 + LIP_WEIGHT inside the outer-lip polygon of verts_out (window px)
    grown by LIP_GROW_PX."""
    poly = np.zeros((size, size), np.uint8)
    cv2.fillPoly(poly, [np.round(verts_out[list(LIPS_OUTER), :2] * 16).astype(np.int32)], 1,
                 lineType=cv2.LINE_8, shift=4)
    grow = 2 * LIP_GROW_PX + 1
    poly = cv2.dilate(poly, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow, grow)))
    return 1.0 + LIP_WEIGHT * poly.astype(np.float32)


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1), np.float32))


def describe(sequences_root: str | Path, *, portrait_share: float = 0.05) -> dict[str, dict[str, Any]]:
    """Counts per split (identities, sequence pairs, portrait pairs) of an exported sequences folder."""
    return {name: GeneratorPairs(sequences_root, name, augment=False, portrait_share=portrait_share).describe()
            for name, _ in SPLITS}
