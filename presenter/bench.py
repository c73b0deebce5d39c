"""`presenter bench stages`: per-stage milliseconds per frame of the face pipeline on this machine.

Each stage runs `repeats` times on real data (the avatar pack's frames and meshes); the
table gives the median and the 90th percentile. Threads: numba and OpenCV are held to one
thread, as one stage of the live loop gets one core.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _time(fn: Callable[[int], object], repeats: int) -> tuple[float, float]:
    fn(0)  # warm-up: JIT, caches
    ms = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        ms.append((time.perf_counter() - t) * 1e3)
    return float(np.median(ms)), float(np.percentile(ms, 90))


def face_stage_timings(pack_dir: Path | None = None, repeats: int = 100) -> list[tuple[str, float, float]]:
    """[(stage, median ms, p90 ms)] for each face-pipeline stage."""
    import cv2

    from presenter.avatar.create import default_pack
    from presenter.avatar.pack import load_pack
    from presenter.face.align import align_transform, crop, paste_back, warp_points
    from presenter.face.fit import fit_face
    from presenter.face.guidance import render_guidance
    from presenter.face.landmarker import FaceLandmarker
    from presenter.face.masks import mouth_mask

    cv2.setNumThreads(1)
    pack = load_pack(pack_dir) if pack_dir else default_pack()
    frames, verts = pack.frames, pack.face["verts_px"]
    n = len(frames)
    rows = []
    with FaceLandmarker("image", max_faces=1) as lm:
        rows.append(("landmarks (IMAGE mode)", *_time(lambda i: lm.detect(frames[i % n]), repeats)))
    with FaceLandmarker("video", max_faces=1) as lm:
        rows.append(("landmarks (VIDEO mode)", *_time(lambda i: lm.detect(frames[i % n]), repeats)))
        obs = lm.detect(frames[0])[0]
    rows.append(("mesh fitting", *_time(lambda i: fit_face(obs), repeats)))
    for s in (128, 256):
        rows.append((f"alignment + crop {s}px", *_time(lambda i: crop(frames[i % n], align_transform(verts[i % n], s), s), repeats)))
    crops = {s: [warp_points(verts[i], pack.face[f"align_{s}"][i]) for i in range(n)] for s in (128, 256)}
    for s in (128, 256):
        rows.append((f"guidance raster {s}px", *_time(lambda i: render_guidance(crops[s][i % n], s), repeats)))
    rows.append(("mouth mask 256px", *_time(lambda i: mouth_mask(crops[256][i % n], 256), repeats)))
    c256 = pack.crops[256]["crops"]
    m256 = pack.face["align_256"]
    rows.append((f"paste-back 256px into {frames.shape[2]}x{frames.shape[1]}",
                 *_time(lambda i: paste_back(frames[i % n], c256[i % n], m256[i % n]), repeats)))
    return rows


def run_face_bench(repeats: int = 100, pack_dir: Path | None = None) -> None:
    """Print the per-stage table."""
    from rich.console import Console
    from rich.table import Table

    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    rows = face_stage_timings(pack_dir, repeats)
    table = Table(title=f"face pipeline, ms/frame ({repeats} runs, {os.cpu_count()} cores, 1 thread per stage)")
    table.add_column("stage")
    table.add_column("median ms", justify="right")
    table.add_column("p90 ms", justify="right")
    for name, med, p90 in rows:
        table.add_row(name, f"{med:.2f}", f"{p90:.2f}")
    Console().print(table)
