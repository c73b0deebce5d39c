"""Measure the watermark (docs/watermark.md): detection under attacks, false positives, PSNR, cost.

Marked sets: the default avatar's idle frames (the live path) and scikit-image's sample photos,
each marked with a random id. Attacks: none, H.264 (libx264 via PyAV) at CRF 23 and 28 (each
image encoded as a 5-frame still clip, the first frame decoded back), a 50 % downscale (INTER_AREA)
and a 10 % crop (90 % of each side kept, at an offset that is not a tile multiple).
Unmarked set: the avatar frames, scikit-image samples and the GAN identity faces
($PRESENTER_HOME/identities-g1/*/face.png, where present), with random scale, crop, flip, gamma
and JPEG augmentation, none of them marked.

    nice -n 10 .venv/bin/python scripts/watermark_bench.py --unmarked 300 --json /tmp/wm.json
    nice -n 10 /tmp/iwm/bin/python scripts/watermark_bench.py --method dwtdct   # invisible-watermark
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from presenter.paths import home  # noqa: E402
from presenter.watermark import Watermark, detect, new_payload  # noqa: E402

SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text", "clock",
           "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel", "cat", "horse",
           "logo", "colorwheel", "eagle", "lily", "skin", "kidney", "cell")


def skimage_images() -> list[np.ndarray]:
    """The sample photos scikit-image ships (those needing a download are skipped), as RGB uint8."""
    from skimage import data
    from skimage.util import img_as_ubyte

    out = []
    for name in SKIMAGE:
        try:
            im = getattr(data, name)()
        except Exception:           # noqa: BLE001 - a sample that must be downloaded: not offline
            continue
        im = img_as_ubyte(im if im.dtype != bool else im.astype(np.float32))
        if im.ndim == 2:
            im = np.stack([im] * 3, -1)
        if im.ndim == 3 and im.shape[2] == 4:
            im = im[..., :3]
        if im.ndim == 3 and im.shape[2] == 3 and min(im.shape[:2]) >= 128:
            out.append(np.ascontiguousarray(im))
    return out


def avatar_frames() -> np.ndarray:
    """The default avatar's idle loop (made by any presenter command that loads the default avatar)."""
    return np.load(home() / "avatars" / "default" / "frames.npz")["frames"]


def identity_faces(limit: int) -> list[np.ndarray]:
    paths = sorted((home() / "identities-g1").glob("*/face.png"))[:limit]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random scale (0.5-1.5), crop (at least 128 px), flip, gamma and JPEG (quality 50-95)."""
    s = rng.uniform(0.5, 1.5)
    h, w = rgb.shape[:2]
    im = cv2.resize(rgb, (max(128, round(w * s)), max(128, round(h * s))), interpolation=cv2.INTER_AREA)
    h, w = im.shape[:2]
    ch, cw = rng.integers(min(128, h), h + 1), rng.integers(min(128, w), w + 1)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    im = im[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        im = im[:, ::-1]
    im = np.clip(255.0 * (im / 255.0) ** rng.uniform(0.7, 1.4), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(im), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 96))])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def h264_roundtrip(rgb: np.ndarray, crf: int, n_frames: int = 5) -> np.ndarray:
    """RGB (H, W, 3) as an n-frame still clip through libx264 at crf; the first decoded frame, RGB."""
    h, w = rgb.shape[0] & ~1, rgb.shape[1] & ~1
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium"}
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
        for i in range(n_frames):
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    buf.seek(0)
    with av.open(buf) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


ATTACKS = {
    "clean": lambda im: im,
    "h264_crf23": lambda im: h264_roundtrip(im, 23),
    "h264_crf28": lambda im: h264_roundtrip(im, 28),
    "downscale_50": lambda im: cv2.resize(im, (im.shape[1] // 2, im.shape[0] // 2), interpolation=cv2.INTER_AREA),
    "crop_10": lambda im: im[im.shape[0] * 3 // 100:im.shape[0] * 3 // 100 + im.shape[0] * 9 // 10,
                             im.shape[1] * 7 // 100:im.shape[1] * 7 // 100 + im.shape[1] * 9 // 10],
}


class Ours:
    name = "presenter spread-spectrum"

    def mark(self, rgb: np.ndarray, run_id: int) -> np.ndarray:
        return Watermark(new_payload(run_id)).mark_rgb(rgb)

    def read(self, rgb: np.ndarray) -> int | None:
        d = detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        self.last_z = d.z
        return d.payload.run_id if d.found else None

    def time_live(self, yuv: np.ndarray) -> float:
        wm = Watermark(new_payload(1))
        wm.mark_yuv420(yuv.copy())                      # pattern made once per size
        t = time.perf_counter()
        wm.mark_yuv420(yuv)
        return time.perf_counter() - t


class DwtDct:
    """invisible-watermark 0.2.0's DWT-DCT on a 32-bit id (its torch/onnx imports stubbed: RivaGAN unused)."""
    name = "invisible-watermark dwtDct"

    def __init__(self) -> None:
        import types

        for m in ("torch", "onnxruntime", "onnx"):
            sys.modules.setdefault(m, types.ModuleType(m))
        from imwatermark import WatermarkDecoder, WatermarkEncoder

        self.enc, self.dec = WatermarkEncoder, WatermarkDecoder

    def mark(self, rgb: np.ndarray, run_id: int) -> np.ndarray:
        e = self.enc()
        e.set_watermark("bytes", run_id.to_bytes(4, "big"))
        return cv2.cvtColor(e.encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct"), cv2.COLOR_BGR2RGB)

    def read(self, rgb: np.ndarray) -> int | None:
        try:
            raw = self.dec("bytes", 32).decode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct")
        except RuntimeError:        # "image too small, should be larger than 256x256"
            return None
        return int.from_bytes(raw, "big")

    def time_live(self, yuv: np.ndarray) -> float:
        rgb = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
        t = time.perf_counter()
        self.mark(rgb, 1)
        return time.perf_counter() - t


def ours_extra_costs(frames: np.ndarray, n: int) -> dict:
    """The live path's PSNR (mark on the Y plane, compared in RGB after yuv420p -> RGB), the offline
    mark (mark_rgb) per frame, and verify's time for one 512 px image and a 48-frame clip."""
    wm = Watermark(new_payload(2))
    psnr = []
    for rgb in frames[::10]:
        yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
        a = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
        b = cv2.cvtColor(wm.mark_yuv420(yuv.copy()), cv2.COLOR_YUV2RGB_I420)
        psnr.append(cv2.PSNR(a, b))
    wm.mark_rgb(frames[0])
    ms_rgb = []
    for i in range(n):
        t = time.perf_counter()
        wm.mark_rgb(frames[i % len(frames)])
        ms_rgb.append(1000 * (time.perf_counter() - t))
    y = cv2.cvtColor(wm.mark_rgb(frames[0]), cv2.COLOR_RGB2GRAY)
    t = time.perf_counter()
    for _ in range(5):
        detect(y)
    one = (time.perf_counter() - t) / 5
    ys = [cv2.cvtColor(wm.mark_rgb(f), cv2.COLOR_RGB2GRAY) for f in frames[:48]]
    t = time.perf_counter()
    detect(ys)
    clip = time.perf_counter() - t
    return {"live_psnr_rgb_db": {"mean": float(np.mean(psnr)), "min": float(np.min(psnr))},
            "mark_rgb_ms": {"p50": float(np.percentile(ms_rgb, 50)), "p95": float(np.percentile(ms_rgb, 95))},
            "detect_s": {"image_512": one, "clip_48x512": clip}, "load_avg_end": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=("ours", "dwtdct"), default="ours")
    ap.add_argument("--avatar-frames", type=int, default=40, help="marked idle frames (every k-th of the loop)")
    ap.add_argument("--unmarked", type=int, default=300, help="unmarked images for false positives (0: skip)")
    ap.add_argument("--timing-frames", type=int, default=500)
    ap.add_argument("--cost-only", action="store_true", help="only the cost per frame and the live path's PSNR")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    method = Ours() if args.method == "ours" else DwtDct()
    rng = np.random.default_rng(0)
    frames = avatar_frames()
    marked_sets = {"avatar": [frames[i] for i in np.linspace(0, len(frames) - 1, args.avatar_frames).astype(int)],
                   "skimage": skimage_images()}
    report: dict = {"method": method.name, "load_avg": os.getloadavg(), "sets": {}}
    psnrs = []
    for set_name, images in ({} if args.cost_only else marked_sets).items():
        rows = {a: 0 for a in ATTACKS}
        for im in images:
            run_id = int(rng.integers(0, 2 ** 32))
            m = method.mark(im, run_id)
            psnrs.append(cv2.PSNR(im, m))
            for a, attack in ATTACKS.items():
                rows[a] += method.read(attack(m)) == run_id
        report["sets"][set_name] = {"n": len(images), **{a: rows[a] / len(images) for a in ATTACKS}}
        print(set_name, report["sets"][set_name], flush=True)
    if psnrs:
        report["psnr_db"] = {"mean": float(np.mean(psnrs)), "min": float(np.min(psnrs))}
    if args.unmarked and not args.cost_only:
        pool = [*frames[::10], *skimage_images(), *identity_faces(args.unmarked)]
        fp, n, zs = 0, 0, []
        for i in range(args.unmarked):
            im = augment(pool[i % len(pool)], rng)
            got = method.read(im)
            if isinstance(method, Ours):
                zs.append(method.last_z)
                fp += got is not None
            else:
                fp += got is not None and got == 0xDEADBEEF      # dwtDct always returns bits: count a fixed id
            n += 1
        report["unmarked"] = {"n": n, "pool": len(pool), "false_positives": fp}
        if zs:
            report["unmarked"]["z_max"] = float(np.max(zs))
            report["unmarked"]["z_p99"] = float(np.percentile(zs, 99))
        print("unmarked", report["unmarked"], flush=True)
    yuv = cv2.cvtColor(frames[0], cv2.COLOR_RGB2YUV_I420)
    ms = [1000 * method.time_live(yuv.copy()) for _ in range(args.timing_frames)]
    report["ms_per_frame"] = {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
                              "load_avg_after": os.getloadavg()}
    if isinstance(method, Ours):
        report.update(ours_extra_costs(frames, args.timing_frames))
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
