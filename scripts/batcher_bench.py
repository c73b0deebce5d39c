"""Cross-session batching on this machine: generator ms per frame against batch size, and a GPU projection.

Measures, on the default avatar with the shipped generator weights:
- the per-frame work each session does in its own thread (prepare: warp, masks, guidance; finish:
  colour match, paste-back), which batching does not share;
- the network call at each batch size (ms per call, ms per frame, GFLOP/s), through the batcher's
  seam (`GeneratorRenderer.generate_batch`) on real prepared windows of several sessions;
- the real ticking batcher with N simulated live sessions, each a thread asking for one frame per
  40 ms slot (prepare `LEAD_S` before its tick, like the live stream's render lead) and skipping
  slots that passed while it waited: the frames per second each session got.
Then projects sessions held at 25 fps on a GPU worker from those numbers and stated assumptions
(printed, and labelled a projection: no GPU ran here).

Examples:
  nice -n 10 .venv/bin/python scripts/batcher_bench.py
  .venv/bin/python scripts/batcher_bench.py --batches 1 4 16 --threads 2 --json /tmp/batcher.json
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("batcher_bench")

FRAME_MS = 40.0
# Projection inputs (DESIGN.md section 6/7, measured 2026-11/12; the GPU numbers on the lent H200):
GPU_CONV_TFLOPS = 368.0      # fp16 3x3 conv, 128 channels at 128 px, batch 8+ (H200)
GPU_EFFICIENCY = 0.10        # share of that a small-width generator reaches (assumed, conservative)
GPU_CALL_OVERHEAD_MS = 3.0   # per network call: kernel launches of eager torch (assumed; CUDA graphs cut it)
PCIE_GBPS = 25.0             # effective host<->GPU copy rate from pageable memory, GB/s (assumed, PCIe 5 x16)
ENCODE_MS = 1.8              # VP8 encode incl. RGB->YUV per 512 px frame, one core (measured, DESIGN section 7)
GPU_HOST_CORES = 16          # the lent H200 machine's cores
HOST_CORES_RESERVED = 2      # the event loop (signalling, RTP) and the batcher thread


LEAD_S = 0.025               # a session starts a frame this long before its tick (StreamConfig.render_lead_s)


def live_lanes(renderer, frames: list, n: int, seconds: float) -> dict:
    """n sessions on a ticking batcher for `seconds` -> frames per second of the slowest and the mean batch."""
    import threading

    from presenter.stream.batcher import CrossSessionBatcher

    tick_s = FRAME_MS / 1e3
    batcher = CrossSessionBatcher(renderer, tick_s=tick_s)
    lanes = [batcher.session() for _ in range(n)]
    slots = int(seconds / tick_s)
    delivered = [0] * n
    cpu0 = time.process_time()
    batcher.start()
    t0 = batcher.next_tick(time.monotonic() + tick_s)      # slots on the batcher's tick grid

    def session(i: int) -> None:
        j = 0
        while j < slots:
            wait = t0 + j * tick_s - LEAD_S - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            lanes[i].render(*frames[(i + j) % len(frames)])
            delivered[i] += 1
            # the next slot whose start is still ahead: slots that passed while rendering are skipped
            j = max(j + 1, int((time.monotonic() + LEAD_S - t0) / tick_s) + 1)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    st = batcher.stats
    # CPU time this process spent per delivered frame (all its threads): what a session costs, whatever
    # the neighbours on a shared machine do to the wall clock
    cpu_ms = (time.process_time() - cpu0) * 1e3 / max(sum(delivered), 1)
    return {"sessions": n, "fps_min": min(delivered) / (slots * tick_s), "fps_mean": sum(delivered) / n / (slots * tick_s),
            "frames_per_tick": st.frames / max(st.ticks, 1), "late_lane_ticks": st.late, "cpu_ms_per_frame": cpu_ms}


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32], help="batch sizes to time")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (torch: always 1)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per batch size (median reported)")
    p.add_argument("--lanes", type=int, nargs="*", default=[1, 2, 3, 4, 6],
                   help="live sessions to run on the ticking batcher, one run each (none: skip)")
    p.add_argument("--seconds", type=float, default=4.0, help="length of each live run, seconds")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.set_num_threads(1)
    from presenter.avatar.create import default_pack
    from presenter.export.generator import per_frame_flops
    from presenter.motion.base import SAMPLE_RATE, is_rest
    from presenter.motion.loudness import LoudnessDriver
    from presenter.render.generator import GeneratorRenderer
    from presenter.server.client import speech_phrases

    pack = default_pack()
    r = GeneratorRenderer(pack, threads=args.threads)
    audio, _ = speech_phrases(rate=SAMPLE_RATE)
    driver = LoudnessDriver()
    poses = [q for q in np.concatenate([driver.push(audio), driver.flush()]) if not is_rest(q)]
    n = max(args.batches)
    frames = [((7 * i) % pack.n_frames, poses[(5 * i) % len(poses)]) for i in range(n)]   # one per session
    preps = [r.prepare(k, q) for k, q in frames]
    prepare_ms = median_ms(lambda: r.prepare(*frames[0]), args.repeats * 3)
    window = r.generate(preps[0].target, preps[0].mask, preps[0].guidance)
    finish_ms = median_ms(lambda: r.finish(preps[0], window), args.repeats * 3)
    gflop = per_frame_flops(r.model) / 1e9

    rows = []
    for b in args.batches:
        t, m, g = (np.stack([getattr(x, f) for x in preps[:b]]) for f in ("target", "mask", "guidance"))
        r.generate_batch(t, m, g)                                  # warm-up (ORT allocates per shape)
        call = median_ms(lambda: r.generate_batch(t, m, g), args.repeats)
        rows.append({"batch": b, "call_ms": call, "frame_ms": call / b, "gflop_per_s": gflop * b / call * 1e3})
    best = min(rows, key=lambda x: x["frame_ms"])
    live = [live_lanes(r, frames, n, args.seconds) for n in args.lanes]
    held = max([x["sessions"] for x in live if x["fps_min"] >= 0.95 * 1e3 / FRAME_MS] or [0])

    # --- projection (NOT measured: no GPU here) ------------------------------------------------------
    host_ms = prepare_ms + finish_ms + ENCODE_MS
    host_sessions = int((GPU_HOST_CORES - HOST_CORES_RESERVED) * FRAME_MS / host_ms)
    gpu_rate = GPU_CONV_TFLOPS * 1e12 * GPU_EFFICIENCY
    S = r.model.cfg.crop_px
    copy_bytes = (3 + 1 + 4 + 3) * S * S * 4                     # fp32 target, mask, guidance in; window out
    gpu_frame_ms = (gflop * 1e9 / gpu_rate + copy_bytes / (PCIE_GBPS * 1e9)) * 1e3
    gpu_batch_max = int((FRAME_MS - GPU_CALL_OVERHEAD_MS) / gpu_frame_ms)
    projection = {
        "label": "PROJECTION from CPU timings and stated assumptions; no GPU ran",
        "assumptions": {"gpu_conv_tflops": GPU_CONV_TFLOPS, "gpu_efficiency": GPU_EFFICIENCY,
                        "gpu_call_overhead_ms": GPU_CALL_OVERHEAD_MS, "pcie_gbps": PCIE_GBPS, "encode_ms": ENCODE_MS,
                        "host_cores": GPU_HOST_CORES, "host_cores_reserved": HOST_CORES_RESERVED},
        "gpu_net_ms_at_batch": {b: round(GPU_CALL_OVERHEAD_MS + b * gpu_frame_ms, 2)
                                for b in (1, 8, 32, 100, 256)},
        "sessions_by_gpu_net": gpu_batch_max,
        "sessions_by_host_cpu": host_sessions,
        "sessions_held_at_25fps": min(gpu_batch_max, host_sessions),
    }
    out = {"date": time.strftime("%Y-%m-%d"), "threads": args.threads, "gflop_per_frame": gflop,
           "prepare_ms": prepare_ms, "finish_ms": finish_ms, "net": rows, "best": best, "live": live,
           "sessions_held_here": held, "projection": projection}

    log.info("generator %.3f GFLOP/frame; per session per frame (one core): prepare %.2f ms, finish %.2f ms",
             gflop, prepare_ms, finish_ms)
    log.info("%6s %10s %10s %10s", "batch", "call ms", "ms/frame", "GFLOP/s")
    for row in rows:
        log.info("%6d %10.2f %10.2f %10.1f", row["batch"], row["call_ms"], row["frame_ms"], row["gflop_per_s"])
    log.info("CPU here (%d ORT thread(s)): the network alone holds %d sessions at 25 fps at batch %d "
             "(%.2f ms/frame); with prepare+finish on the same core(s): %d",
             args.threads, int(FRAME_MS / best["frame_ms"]), best["batch"], best["frame_ms"],
             int(FRAME_MS / (best["frame_ms"] + prepare_ms + finish_ms)))
    log.info("%8s %10s %10s %14s %10s %14s", "sessions", "fps min", "fps mean", "frames/tick", "late", "CPU ms/frame")
    for x in live:
        log.info("%8d %10.1f %10.1f %14.2f %10d %14.2f", x["sessions"], x["fps_min"], x["fps_mean"],
                 x["frames_per_tick"], x["late_lane_ticks"], x["cpu_ms_per_frame"])
    log.info("measured here: %d sessions held at >= 95%% of 25 fps on the ticking batcher", held)
    log.info("%s:", projection["label"])
    log.info("  GPU network per tick: %s ms at batch 1/8/32/100/256 -> the GPU alone holds ~%d sessions",
             "/".join(str(v) for v in projection["gpu_net_ms_at_batch"].values()), gpu_batch_max)
    log.info("  host CPU per session-frame %.1f ms (prepare + finish + encode) on %d of %d cores -> ~%d sessions",
             host_ms, GPU_HOST_CORES - HOST_CORES_RESERVED, GPU_HOST_CORES, host_sessions)
    log.info("  sessions held at 25 fps per GPU worker: ~%d (the host CPU is the limit, not the GPU)",
             projection["sessions_held_at_25fps"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
