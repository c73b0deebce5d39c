"""The avatar pack: an on-disk folder, versioned by its manifest, written atomically.

Layout (format version 1):

    manifest.json   format, version, source and attribution, fps, frame size, crop sizes,
                    reference frames, loop kind, landmarker sha256
    frames.npz      frames (N, H, W, 3) uint8 RGB: the idle loop; frame N follows frame N-1 seamlessly
    face.npz        verts_px (N, V, 3) mesh in frame pixels (z larger = nearer);
                    canon (N, V, 3) cm, pose-free; rotation (N, 3, 3); scale (N,); translation (N, 3);
                    neutral (V, 3) cm; align_<S> (N, 2, 3) frame -> crop transforms for each crop size
    crops_<S>.npz   crops (N, S, S, 3) uint8; mouth_mask, face_mask (N, S, S) uint8 (0..255)
    preview.png     a contact sheet for people
    speaking_style.npz  optional: motion (T, V, 3) cm of the person's own mouth, from their footage
                    (`presenter avatar finetune`): the SyncFormer speaks in that style
    styles.npz      optional: the generator's style codes of the reference frames, styles (1, D) float32,
                    and the sha256 of the generator weights they belong to (`weights`); written by
                    `presenter avatar create` or on a generator's first use of the pack

Legend: N idle-loop frames, V = 468 mesh vertices, S crop side in pixels.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from presenter.errors import UserError

log = logging.getLogger(__name__)

FORMAT = "presenter-avatar"
VERSION = 1
CROP_SIZES = (128, 256)


@dataclass(frozen=True)
class AvatarPack:
    """A loaded pack. Arrays are read-only views of the files."""
    root: Path
    manifest: dict[str, Any]
    frames: np.ndarray                       # (N, H, W, 3) uint8
    face: dict[str, np.ndarray]              # see the module docstring
    crops: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)  # S -> crops, masks

    @property
    def fps(self) -> int:
        return int(self.manifest["fps"])

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def reference_indices(self) -> list[int]:
        return list(self.manifest["reference_indices"])


def load_pack(root: str | Path) -> AvatarPack:
    """Load a pack, checking its manifest; errors name the file and what to do."""
    root = Path(root)
    mpath = root / "manifest.json"
    if not mpath.is_file():
        raise UserError(f"{root} is not an avatar pack (no manifest.json); make one with "
                        f"'presenter avatar create --image FILE -o {root}'")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{mpath}: not valid JSON ({e}); recreate the pack") from None
    if manifest.get("format") != FORMAT:
        raise UserError(f"{mpath}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise UserError(f"{mpath}: pack version {manifest.get('version')!r}; this presenter reads version "
                        f"{VERSION}: recreate the pack with 'presenter avatar create'")
    try:
        with np.load(root / "frames.npz") as z:
            frames = z["frames"]
        with np.load(root / "face.npz") as z:
            face = {k: z[k] for k in z.files}
        crops = {}
        for s in manifest["crop_sizes"]:
            with np.load(root / f"crops_{s}.npz") as z:
                crops[int(s)] = {k: z[k] for k in z.files}
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"{root}: damaged avatar pack ({e}); recreate it with 'presenter avatar create'") from None
    return AvatarPack(root, manifest, frames, face, crops)


STYLES = "styles.npz"


def read_styles(pack: AvatarPack, weights_sha256: str) -> np.ndarray | None:
    """The pack's cached style codes (1, D) for these generator weights, or None (absent, other weights, damaged)."""
    path = pack.root / STYLES
    try:
        with np.load(path) as z:
            if str(z["weights"]) == weights_sha256:
                return z["styles"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        pass
    return None


def write_styles(pack: AvatarPack, weights_sha256: str, styles: np.ndarray) -> bool:
    """Store style codes in the pack, atomically; False (and a log line) if the pack is read-only."""
    tmp = pack.root / f".{STYLES}.{os.getpid()}.tmp.npz"
    try:
        np.savez(tmp, styles=np.asarray(styles, np.float32), weights=np.array(weights_sha256))
        os.replace(tmp, pack.root / STYLES)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        log.info("could not store style codes in %s (%s); they are recomputed on each start", pack.root, e)
        return False
    return True


SPEAKING_STYLE = "speaking_style.npz"


def read_speaking_style(pack: AvatarPack) -> np.ndarray | None:
    """The person's mouth motion (T, V, 3) cm from their footage (`presenter avatar finetune`), which
    the SyncFormer's style encoder reads, or None."""
    try:
        with np.load(pack.root / SPEAKING_STYLE) as z:
            return z["motion"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None


def write_speaking_style(root: Path, motion: np.ndarray) -> None:
    """Store a speaking style (T, V, 3) cm in the pack folder root, atomically."""
    tmp = Path(root) / f".{SPEAKING_STYLE}.{os.getpid()}.tmp.npz"
    try:
        np.savez_compressed(tmp, motion=np.asarray(motion, np.float16))
        os.replace(tmp, Path(root) / SPEAKING_STYLE)
    finally:
        tmp.unlink(missing_ok=True)


def write_pack(out: Path, manifest: dict[str, Any], frames: np.ndarray, face: dict[str, np.ndarray],
               crops: dict[int, dict[str, np.ndarray]], preview: np.ndarray | None = None, *,
               force: bool = False) -> Path:
    """Write a pack to a temporary sibling folder, then rename it into place.

    An existing `out` is an error unless force=True, in which case it is replaced only after
    the new pack is complete. A failure leaves nothing behind.
    """
    import cv2

    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"output {out} already exists; choose another path or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a pack is an ordinary folder
        np.savez_compressed(tmp / "frames.npz", frames=frames)
        np.savez(tmp / "face.npz", **face)
        for s, arrays in crops.items():
            np.savez_compressed(tmp / f"crops_{s}.npz", **arrays)
        if preview is not None:
            cv2.imwrite(str(tmp / "preview.png"), preview[..., ::-1])
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote avatar pack %s (%d frames)", out, len(frames))
    return out
