"""Identities for the corpus: faces from the shipped face GAN, kept only when usable, split by identity.

`generate_identities` walks candidate indices 0, 1, 2, ... of one seed (z depends only on seed
and index, see `facegan.latent_z`), keeps a candidate when the landmarker sees exactly one large,
near-frontal face with open eyes, and drops it when dlib's identity descriptor is within
`duplicate_distance` of an identity already kept (index order decides, so the result does not
depend on the number of workers). It stops when `count` identities are kept.

On disk (OUT):
  index.json             settings, every candidate's fate (kept, or the rejection reason and
                         the measurements behind it), the kept identities with their split
  <id>/face.png          the 1024 px face downscaled to 512 px (RGB), for rendering talking clips
  <id>/crop_128.png      aligned crops (presenter.face.align template)
  <id>/crop_256.png
  <id>/face.npz          z, w, landmarks, blendshapes, fitted mesh (verts_px in face.png pixels,
                         canon cm), head pose, crop transforms and meshes, dlib descriptor
  <id>/meta.json         id, seed, index, split, pose, source and lineage

Identity folders are written to a temporary sibling and renamed into place; index.json is
replaced atomically. A run that stops part way resumes where index.json left off; an identity
folder already complete is reused, not rewritten.

Splits are by identity: a hash of the id puts 80 % in train, 10 % in val, 10 % in test. Test
identities are never used in training or model selection. The dlib descriptor is for data
curation and evaluation only; it never enters the runtime path.

`import_images` writes the same format from your own photos (one person per photo, no z or w),
so the corpus takes identities from any licensed source without code changes.

Legend: V = 468 mesh vertices, L = 478 landmarks; pixels of face.png unless said otherwise.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from presenter.data.facegan import DEFAULT_PSI, LINEAGE, FaceGAN, latent_z
from presenter.errors import UserError
from presenter.face.align import CROP_SIZES, align_transform, warp_points
from presenter.face.canonical import LEFT_EYE_LOWER, LEFT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_UPPER
from presenter.face.fit import FittedFace, fit_face, mouth_opening_cm
from presenter.face.landmarker import FaceLandmarker, FaceObservation

log = logging.getLogger(__name__)

FORMAT = "presenter-identities/1"
FULL_PX = 512                       # written face.png side; the GAN's 1024 px halved by area averaging
EYE_BLINK = (9, 10)                 # MediaPipe blendshape order: eyeBlinkLeft, eyeBlinkRight
JAW_OPEN = 25
MOUTH_SMILE = (44, 45)              # mouthSmileLeft, mouthSmileRight
SPLITS = (("train", 80), ("val", 10), ("test", 10))   # percent of identities, by hash of the id
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
PHOTO_FACE_FRACTION = 0.55          # imported photos are framed with the face this wide in the square (GAN: 0.5-0.65)
SAVE_EVERY = 16                     # rewrite index.json at least every this many candidates (and on every kept one)


@dataclass(frozen=True)
class Thresholds:
    """What makes a face usable. Angles in degrees; fractions of the image width."""
    max_yaw_deg: float = 20.0         # |yaw| above this: too far from frontal
    max_pitch_deg: float = 20.0       # |pitch| above this
    min_face_fraction: float = 0.40   # face-mesh width / image width below this: too small (GAN faces: 0.5-0.65)
    max_eye_blink: float = 0.5        # eyeBlinkLeft or eyeBlinkRight above this: eyes closed
    min_eye_opening: float = 0.08     # lid gap / eye width (pose-free mesh) below this in either eye: eyes
                                      # closed (open eyes: median 0.21; heavy squints 0.07-0.09)
    second_face_fraction: float = 0.25  # another face at least this wide (fraction of the main face): several faces
    duplicate_distance: float = 0.45  # dlib descriptor distance below this to a kept identity: near-duplicate


def head_pose_deg(matrix: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from MediaPipe's facial transformation matrix (4, 4).

    R = Ry(yaw) Rx(pitch) Rz(roll) in MediaPipe's camera frame; a mirrored image negates yaw and roll.
    """
    r = np.asarray(matrix, np.float64)[:3, :3]
    yaw = np.arctan2(r[0, 2], r[2, 2])
    pitch = np.arcsin(np.clip(-r[1, 2], -1.0, 1.0))
    roll = np.arctan2(r[1, 0], r[1, 1])
    return np.degrees([yaw, pitch, roll]).astype(np.float32)


def eye_opening(canon: np.ndarray) -> np.ndarray:
    """(2,) lid gap / eye width of each eye, from a pose-free canonical mesh (V, 3)."""
    out = []
    for upper, lower in ((LEFT_EYE_UPPER, LEFT_EYE_LOWER), (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)):
        gap = (canon[list(upper), 1] - canon[list(lower), 1]).mean()
        out.append(gap / np.ptp(canon[list(upper), 0]))
    return np.array(out, np.float32)


def split_of(identity_id: str) -> str:
    """train / val / test from a hash of the id: stable, independent of the order of generation."""
    bucket = int(hashlib.sha256(identity_id.encode()).hexdigest()[:8], 16) % 100
    edge = 0
    for name, percent in SPLITS:
        edge += percent
        if bucket < edge:
            return name
    raise AssertionError("SPLITS must add up to 100")


def identity_id(seed: int, index: int) -> str:
    return f"s{seed}-{index:06d}"


@dataclass(frozen=True)
class Assessment:
    """The landmarker's view of one image and the verdict (reason None = usable so far)."""
    reason: str | None
    detail: str                              # human-readable numbers behind the verdict
    face: FaceObservation | None             # the main (largest) face, if any
    measures: dict[str, float] = field(default_factory=dict)


def assess(rgb: np.ndarray, faces: list[FaceObservation], thr: Thresholds = Thresholds()) -> Assessment:
    """Check one image's faces (largest first) against the thresholds, in a fixed order of reasons."""
    if not faces:
        return Assessment("no_face", "the landmarker found no face", None)
    main = faces[0]
    canon = fit_face(main).canon
    yaw, pitch, roll = (float(a) for a in head_pose_deg(main.matrix))
    measures = {
        "face_fraction": main.width_px / rgb.shape[1],
        "yaw_deg": yaw, "pitch_deg": pitch, "roll_deg": roll,
        "eye_blink_left": float(main.blendshapes[EYE_BLINK[0]]),
        "eye_blink_right": float(main.blendshapes[EYE_BLINK[1]]),
        "jaw_open": float(main.blendshapes[JAW_OPEN]),
        "smile": float(main.blendshapes[list(MOUTH_SMILE)].mean()),
        "eye_opening": float(eye_opening(canon).min()),
        "mouth_open_cm": float(mouth_opening_cm(canon)),
    }
    measures = {k: round(v, 4) for k, v in measures.items()}
    others = [f.width_px / main.width_px for f in faces[1:]]
    if others and max(others) >= thr.second_face_fraction:
        return Assessment("several_faces", f"{len(faces)} faces; the second is {max(others):.2f} of the main "
                          f"face's width (limit {thr.second_face_fraction})", main, measures)
    if measures["face_fraction"] < thr.min_face_fraction:
        return Assessment("small_face", f"face is {measures['face_fraction']:.2f} of the image width "
                          f"(minimum {thr.min_face_fraction})", main, measures)
    if abs(yaw) > thr.max_yaw_deg or abs(pitch) > thr.max_pitch_deg:
        return Assessment("head_pose", f"yaw {yaw:.1f}, pitch {pitch:.1f} deg (limit +-{thr.max_yaw_deg}, "
                          f"+-{thr.max_pitch_deg})", main, measures)
    blink = max(measures["eye_blink_left"], measures["eye_blink_right"])
    if blink > thr.max_eye_blink or measures["eye_opening"] < thr.min_eye_opening:
        return Assessment("eyes_closed", f"eye blink score {blink:.2f} (maximum {thr.max_eye_blink}), eye opening "
                          f"{measures['eye_opening']:.3f} (minimum {thr.min_eye_opening})", main, measures)
    return Assessment(None, "usable", main, measures)


class IdentityEncoder:
    """dlib's 128-D face descriptor (ResNet, face-recognition-models 0.3.0), for curation and evaluation only.

    The face chip is aligned by dlib's 5-point predictor inside a box placed from the landmarker's
    eye corners (matched on average to dlib's own HOG detector box on GAN faces), so the box does
    not move when the mouth opens. dlib's 68-point predictor (non-commercial) is not used.
    """

    def __init__(self) -> None:
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")   # its __init__ needs pkg_resources: don't import
        if spec is None or not spec.submodule_search_locations:
            raise UserError("identity distance needs PyPI face-recognition-models 0.3.0 and dlib-bin 20.0.1.post1")
        d = Path(list(spec.submodule_search_locations)[0]) / "models"
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(self, rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """RGB (H, W, 3) uint8 and the face's landmarks (L, 2+) px -> descriptor (128,) float32."""
        eye_a = landmarks[[33, 133], :2].mean(0)
        eye_b = landmarks[[263, 362], :2].mean(0)
        e = float(np.linalg.norm(eye_b - eye_a))
        cx, cy = (eye_a + eye_b) / 2 + np.array([-0.048 * e, 0.55 * e])   # fitted to dlib's HOG boxes
        half = 1.275 * e
        box = self._dlib.rectangle(int(round(cx - half)), int(round(cy - half)),
                                   int(round(cx + half)), int(round(cy + half)))
        img = np.ascontiguousarray(rgb)
        return np.asarray(self._net.compute_face_descriptor(img, self._shape(img, box)), np.float32)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Euclidean descriptor distance; dlib's own same-person threshold is 0.6."""
        return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


@dataclass
class Candidate:
    """One generated face and everything measured on it."""
    index: int
    z: np.ndarray                  # (512,) float32
    w: np.ndarray                  # (512,) float32, truncated
    image: np.ndarray              # (FULL_PX, FULL_PX, 3) uint8 RGB
    assessment: Assessment
    descriptor: np.ndarray | None  # (128,) float32 when the face passed the landmarker checks


class Pipeline:
    """The models one process needs: face GAN, landmarker and identity encoder. Close it when done."""

    def __init__(self, *, psi: float = DEFAULT_PSI, thresholds: Thresholds = Thresholds(), threads: int = 0) -> None:
        self.psi = psi
        self.thresholds = thresholds
        self.threads = threads
        self.landmarker = FaceLandmarker("image", max_faces=4)
        self.encoder = IdentityEncoder()

    @cached_property
    def gan(self) -> FaceGAN:
        """Loaded on first use: importing photos needs no GAN."""
        return FaceGAN(threads=self.threads)

    def render(self, w: np.ndarray) -> np.ndarray:
        """w (512,) -> RGB (FULL_PX, FULL_PX, 3) uint8, the 1024 px output area-averaged down."""
        return cv2.resize(self.gan.synthesize(w), (FULL_PX, FULL_PX), interpolation=cv2.INTER_AREA)

    def observe(self, rgb: np.ndarray) -> tuple[Assessment, np.ndarray | None]:
        """Landmarker checks, then (only for faces that pass) the identity descriptor."""
        a = assess(rgb, self.landmarker.detect(rgb), self.thresholds)
        desc = None if a.reason else self.encoder.descriptor(rgb, a.face.landmarks)
        return a, desc

    def candidate(self, seed: int, index: int) -> Candidate:
        z = latent_z(seed, index)
        w = self.gan.w_from_z(z, self.psi)
        image = self.render(w)
        a, desc = self.observe(image)
        return Candidate(index, z, w, image, a, desc)

    def close(self) -> None:
        self.landmarker.close()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def aligned_crops(image: np.ndarray, verts_px: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{size: (crop (S, S, 3) uint8, transform (2, 3) image -> crop)} for CROP_SIZES.

    Each crop samples the level of the image pyramid (cv2.pyrDown: level-l pixel x sits at
    image pixel 2^l x) whose scale keeps the warp from shrinking more than 2x, so small crops do not alias.
    """
    out = {}
    for size in CROP_SIZES:
        m = align_transform(verts_px, size)
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        src, m_src = image, m.copy()
        while scale * 2 <= 1.0:                 # one pyramid level down halves the work of the warp
            src = cv2.pyrDown(src)
            m_src[:, :2] *= 2.0
            scale *= 2.0
        crop_img = cv2.warpAffine(src, m_src, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[size] = (crop_img, m)
    return out


def face_arrays(image: np.ndarray, obs: FaceObservation) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Fitted mesh, pose and aligned crops of one face: (arrays for face.npz, {size: crop})."""
    fitted: FittedFace = fit_face(obs)
    arrays = {
        "landmarks": obs.landmarks, "blendshapes": obs.blendshapes, "matrix": obs.matrix,
        "verts_px": fitted.verts_px, "canon": fitted.canon, "rotation": fitted.rotation,
        "scale": np.float32(fitted.scale), "translation": fitted.translation,
        "pose_deg": head_pose_deg(obs.matrix),
    }
    crops = {}
    for size, (crop_img, m) in aligned_crops(image, fitted.verts_px).items():
        arrays[f"align_{size}"] = m
        arrays[f"verts_{size}"] = warp_points(fitted.verts_px, m)
        crops[size] = crop_img
    return arrays, crops


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write {path}")


def image_sha256(rgb: np.ndarray) -> str:
    """Hash of the pixels (not of the PNG bytes, which depend on the encoder)."""
    return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def write_identity(root: Path, ident: str, image: np.ndarray, obs: FaceObservation, meta: dict[str, Any],
                   extra: dict[str, np.ndarray]) -> Path:
    """Write one identity folder root/ident atomically (temporary sibling, then rename)."""
    out = root / ident
    arrays, crops = face_arrays(image, obs)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ident}.", suffix=".tmp", dir=root))
    try:
        tmp.chmod(0o755)
        _write_png(tmp / "face.png", image)
        for size, crop_img in crops.items():
            _write_png(tmp / f"crop_{size}.png", crop_img)
        np.savez(tmp / "face.npz", **arrays, **extra)
        meta = {**meta, "image_sha256": image_sha256(image),
                "pose_deg": [round(float(a), 3) for a in arrays["pose_deg"]]}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_json_atomic(path: Path, obj: Any) -> None:
    """Replace a JSON file in one step: a reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def _is_complete(folder: Path) -> bool:
    return (folder / "meta.json").is_file()   # written last inside the temporary folder


def load_index(root: str | Path) -> dict[str, Any]:
    """An identities folder's index.json."""
    p = Path(root) / "index.json"
    if not p.is_file():
        raise UserError(f"{root} has no index.json; make identities with 'presenter data identities -o {root}'")
    index = json.loads(p.read_text())
    if index.get("format") != FORMAT:
        raise UserError(f"{p}: format {index.get('format')!r}, expected {FORMAT!r}; regenerate the identities")
    return index


def identities_of(root: str | Path, split: str | None = None) -> list[str]:
    """Kept identity ids, in generation order, optionally of one split."""
    return [r["id"] for r in load_index(root)["identities"] if split is None or r["split"] == split]


def load_identity_images(root: str | Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Kept identities' face.png images by split: {split: [(id, RGB (512, 512, 3) uint8), ...]}.

    About 0.8 MB of memory per identity (650 identities: 0.5 GB).
    """
    out: dict[str, list[tuple[str, np.ndarray]]] = {name: [] for name, _ in SPLITS}
    for r in load_index(root)["identities"]:
        bgr = cv2.imread(str(Path(root) / r["id"] / "face.png"), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"{Path(root) / r['id'] / 'face.png'} is missing or damaged; rerun "
                            f"'presenter data identities -o {root}' with the same options to restore it")
        out[r["split"]].append((r["id"], np.ascontiguousarray(bgr[..., ::-1])))
    return out


def _settings(seed: int, psi: float, thr: Thresholds) -> dict[str, Any]:
    return {"seed": int(seed), "psi": float(psi), "full_px": FULL_PX, "crop_sizes": list(CROP_SIZES),
            "thresholds": dataclasses.asdict(thr), "splits": dict(SPLITS)}


def _new_index(settings: dict[str, Any]) -> dict[str, Any]:
    return {"format": FORMAT, "source": "random-face 2021.7.21.1 (MobileStyleGAN, OpenVINO IR)",
            "lineage": LINEAGE, "settings": settings, "next_index": 0, "identities": [], "rejected": [],
            "counts": {}}


def _save(path: Path, index: dict[str, Any]) -> None:
    index["counts"] = _counts(index)
    write_json_atomic(path, index)


def _counts(index: dict[str, Any]) -> dict[str, int]:
    c: dict[str, int] = {"candidates": index["next_index"], "kept": len(index["identities"])}
    for r in index["identities"]:
        c[r["split"]] = c.get(r["split"], 0) + 1
    for r in index["rejected"]:
        c[f"rejected_{r['reason']}"] = c.get(f"rejected_{r['reason']}", 0) + 1
    return c


# Worker processes hold one Pipeline each, built once by the pool initialiser.
_WORKER: Pipeline | None = None


def _worker_init(psi: float, thr: Thresholds, threads: int) -> None:
    global _WORKER
    _WORKER = Pipeline(psi=psi, thresholds=thr, threads=threads)


def _worker_candidate(job: tuple[int, int]) -> Candidate:
    assert _WORKER is not None
    return _WORKER.candidate(*job)


def _candidates(seed: int, start: int, stop: int, *, pipeline: Pipeline | None, workers: int, psi: float,
                thr: Thresholds) -> Iterator[Candidate]:
    """Candidates start ... stop - 1 in index order, from this process or from a pool of workers.

    Close the iterator to stop early: the pool (and its work ahead) ends with it.
    """
    if workers <= 1:
        own = pipeline is None
        p = pipeline or Pipeline(psi=psi, thresholds=thr)
        try:
            for i in range(start, stop):
                yield p.candidate(seed, i)
        finally:
            if own:
                p.close()
        return
    import multiprocessing as mp

    threads = max(1, (os.cpu_count() or 1) // workers)
    with mp.get_context("spawn").Pool(workers, _worker_init, (psi, thr, threads)) as pool:
        yield from pool.imap(_worker_candidate, ((seed, i) for i in range(start, stop)), chunksize=1)


def generate_identities(out: str | Path, *, count: int, seed: int, psi: float = DEFAULT_PSI,
                        thresholds: Thresholds = Thresholds(), workers: int = 1, max_candidates: int | None = None,
                        progress: bool = False, pipeline: Pipeline | None = None) -> dict[str, Any]:
    """Generate until `count` identities are kept in `out` (resuming a previous run there); returns the index.

    max_candidates: stop after this many candidate indices in total (default 5 * count + 20).
    pipeline: models to reuse (single-process runs only; built and closed here when None).
    """
    if count < 1:
        raise UserError(f"--count must be at least 1, got {count}")
    if not 0.0 < psi <= 1.0:
        raise UserError(f"--psi must be in (0, 1], got {psi}")
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if pipeline is not None and (pipeline.psi != psi or pipeline.thresholds != thresholds):
        raise ValueError("the given pipeline was built with other psi or thresholds")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    settings = _settings(seed, psi, thresholds)
    index_path = root / "index.json"
    if index_path.exists():
        index = load_index(root)
        if index["settings"] != settings:
            raise UserError(f"{root} holds identities made with other settings ({index['settings']}); "
                            f"resume with the same --seed and --psi, or choose another -o folder")
    else:
        index = _new_index(settings)
    for stale in root.glob(".*.tmp"):           # left by a run that was killed while writing (one writer per folder)
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    max_candidates = 5 * count + 20 if max_candidates is None else max_candidates
    kept = index["identities"]
    if len(kept) >= count:
        log.info("%s already holds %d identities (asked for %d): nothing to do", root, len(kept), count)
        return index
    descriptors = [np.load(root / r["id"] / "face.npz")["descriptor"] for r in kept]

    from tqdm import tqdm

    bar = tqdm(total=count, initial=len(kept), desc="identities", unit="id", disable=not progress)
    stream = _candidates(seed, index["next_index"], max_candidates, pipeline=pipeline, workers=workers, psi=psi,
                         thr=thresholds)
    try:
        for cand in stream:
            a = cand.assessment
            reason, detail = a.reason, a.detail
            if reason is None and descriptors:
                dist = IdentityEncoder.distance(np.stack(descriptors), cand.descriptor)
                j = int(np.argmin(dist))
                if dist[j] < thresholds.duplicate_distance:
                    reason = "near_duplicate"
                    detail = (f"dlib distance {dist[j]:.3f} to {kept[j]['id']} "
                              f"(minimum {thresholds.duplicate_distance})")
            if reason is None:
                ident = identity_id(seed, cand.index)
                record = {"id": ident, "index": cand.index, "split": split_of(ident), **a.measures}
                if not _is_complete(root / ident):
                    meta = {"id": ident, "seed": seed, "index": cand.index, "split": record["split"], "psi": psi,
                            "source": index["source"], "lineage": LINEAGE, "measures": a.measures}
                    write_identity(root, ident, cand.image, a.face, meta,
                                   {"z": cand.z, "w": cand.w, "descriptor": cand.descriptor})
                kept.append(record)
                descriptors.append(cand.descriptor)
                bar.update(1)
            else:
                index["rejected"].append({"index": cand.index, "reason": reason, "detail": detail, **a.measures})
            index["next_index"] = cand.index + 1
            bar.set_postfix(candidates=index["next_index"], rejected=len(index["rejected"]), refresh=False)
            if reason is None or index["next_index"] % SAVE_EVERY == 0:
                _save(index_path, index)
            if len(kept) >= count:
                break
    finally:
        stream.close()
        _save(index_path, index)   # also on Ctrl-C: next_index only ever counts finished candidates
        bar.close()
    if len(kept) < count:
        log.warning("stopped after %d candidates with %d of %d identities; raise --max-candidates or relax thresholds",
                    index["next_index"], len(kept), count)
    c = index["counts"]
    log.info("%s: %d identities (train %d, val %d, test %d) from %d candidates", root, c["kept"],
             c.get("train", 0), c.get("val", 0), c.get("test", 0), c["candidates"])
    return index


def frame_photo(rgb: np.ndarray, landmarker: FaceLandmarker) -> np.ndarray | None:
    """A photo (H, W, 3) -> a FULL_PX square around its largest face, framed like the GAN's faces (None: no face)."""
    h, w = rgb.shape[:2]
    s = min(1.0, 1024 / max(h, w))
    small = cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else rgb
    faces = landmarker.detect(small)
    if not faces:
        return None
    pts = faces[0].landmarks[:468, :2] / s
    centre = (pts.min(0) + pts.max(0)) / 2
    half = int(np.ceil(np.ptp(pts[:, 0]) / PHOTO_FACE_FRACTION / 2))
    x0, y0 = int(round(centre[0])) - half, int(round(centre[1])) - half
    pad = max(0, -x0, -y0, x0 + 2 * half - w, y0 + 2 * half - h)
    padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    square = padded[y0 + pad:y0 + pad + 2 * half, x0 + pad:x0 + pad + 2 * half]
    interp = cv2.INTER_AREA if 2 * half > FULL_PX else cv2.INTER_CUBIC
    return cv2.resize(square, (FULL_PX, FULL_PX), interpolation=interp)


def import_images(out: str | Path, images: str | Path, *, attribution: str, thresholds: Thresholds = Thresholds(),
                  progress: bool = False) -> dict[str, Any]:
    """Identities from your own photos (one person per photo): same checks, same folder format, no z or w.

    Each photo is framed like the GAN's faces, checked, de-duplicated against the photos already kept,
    and written as identity `img-<file name>`; attribution (author, licence) goes into its meta.json.
    Resumable: photos already recorded in index.json are skipped.
    """
    from tqdm import tqdm

    paths = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images}")
    if not attribution.strip():
        raise UserError("--attribution is required with --images: say whose photos these are and under which licence")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    settings = {"source": "images", "full_px": FULL_PX, "crop_sizes": list(CROP_SIZES),
                "thresholds": dataclasses.asdict(thresholds), "splits": dict(SPLITS)}
    index_path = root / "index.json"
    if index_path.exists():
        index = load_index(root)
        if index["settings"] != settings:
            raise UserError(f"{root} holds identities made another way ({index['settings']}); choose another -o folder")
    else:
        index = {"format": FORMAT, "source": "photos", "lineage": attribution, "settings": settings,
                 "next_index": 0, "identities": [], "rejected": [], "counts": {}}
    done = {r["file"] for r in index["identities"] + index["rejected"]}
    kept = index["identities"]
    descriptors = [np.load(root / r["id"] / "face.npz")["descriptor"] for r in kept]
    with Pipeline(thresholds=thresholds) as p:
        for path in tqdm(paths, desc="photos", unit="img", disable=not progress):
            if path.name in done:
                continue
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise UserError(f"cannot read {path} as an image")
            image = frame_photo(bgr[..., ::-1].copy(), p.landmarker)
            a, desc = p.observe(image) if image is not None else (assess(bgr, [], thresholds), None)
            reason, detail = a.reason, a.detail
            if reason is None and descriptors:
                dist = IdentityEncoder.distance(np.stack(descriptors), desc)
                j = int(np.argmin(dist))
                if dist[j] < thresholds.duplicate_distance:
                    reason, detail = "near_duplicate", f"dlib distance {dist[j]:.3f} to {kept[j]['id']}"
            if reason is None:
                ident = "img-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in path.name)
                record = {"id": ident, "file": path.name, "split": split_of(ident), **a.measures}
                if not _is_complete(root / ident):
                    meta = {"id": ident, "file": path.name, "split": record["split"], "source": "photo",
                            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                            "attribution": attribution, "lineage": attribution, "measures": a.measures}
                    write_identity(root, ident, image, a.face, meta, {"descriptor": desc})
                kept.append(record)
                descriptors.append(desc)
            else:
                index["rejected"].append({"file": path.name, "reason": reason, "detail": detail, **a.measures})
            index["next_index"] += 1
            _save(index_path, index)
    log.info("%s: %d identities from %d photos", root, len(kept), index["next_index"])
    return index

