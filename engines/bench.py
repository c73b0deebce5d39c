"""`presenter bench networks`: per-network, per-backend timings against the machine's in-run matmul rate.

For each network of the export registry, backend and batch size: milliseconds per call (p50,
p95) on live-shaped inputs, GFLOP per call, achieved GFLOP/s (at p50) and its share of the
practical peak: a dense fp32 matmul (N x N by N x N) timed in the same run with the same thread
count, in torch and in ONNX Runtime, the faster of the two, measured right before and after each
timed cell (the faster of those two), since other work on a shared machine moves it. FLOPs are counted by torch's
FlopCounterMode (matmuls, convolutions, attention; 2 per multiply-add; element-wise ops not
counted), so a share is of useful dense work, not of all instructions.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")
GOAL_SHARE = 0.60          # issue 16: the generator's live preset at >= 60 % of the in-run matmul rate on CPU
MATMUL_N = 1024


def time_calls(call: Callable[[], object], *, repeats: int, max_s: float, warmup: int = 3) -> np.ndarray:
    """Milliseconds of `repeats` calls after `warmup` (fewer, at least 5, when they pass max_s seconds)."""
    for _ in range(warmup):
        call()
    ms: list[float] = []
    start = time.perf_counter()
    while len(ms) < repeats and (len(ms) < 5 or time.perf_counter() - start < max_s):
        t = time.perf_counter()
        call()
        ms.append((time.perf_counter() - t) * 1e3)
    return np.asarray(ms)


class MatmulProbe:
    """A dense fp32 n x n by n x n matmul in torch and in ONNX Runtime at a fixed thread count: the practical peak.

    On a machine shared with other work the rate moves within a run, so the bench measures it
    beside every timed cell and divides by that neighbour, not by one number from the start.
    """

    def __init__(self, threads: int, *, n: int = MATMUL_N) -> None:
        import torch
        from onnx import TensorProto, helper

        from presenter.engines.onnxruntime import session

        self.threads, self.n, self.flop = threads, n, 2.0 * n ** 3
        self.a, self.b = torch.randn(n, n), torch.randn(n, n)
        graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                                  [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        self.session = session(model.SerializeToString(), threads)
        self.feeds = {"a": self.a.numpy(), "b": self.b.numpy()}

    def measure(self, *, repeats: int = 10, max_s: float = 1.0) -> dict[str, float]:
        """GFLOP/s at p50 in torch and in ONNX Runtime, and the faster of the two ("peak")."""
        import torch

        torch.set_num_threads(self.threads)
        torch_ms = np.percentile(time_calls(lambda: torch.mm(self.a, self.b), repeats=repeats, max_s=max_s), 50)
        ort_ms = np.percentile(time_calls(lambda: self.session.run(None, self.feeds), repeats=repeats, max_s=max_s), 50)
        rates = {"torch": self.flop / torch_ms / 1e6, "onnxruntime": self.flop / ort_ms / 1e6}
        return {**rates, "peak": max(rates.values())}


def call_flops(module, inputs: Sequence[str], feeds: dict[str, np.ndarray]) -> int:
    """FLOPs of module(*feeds) counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(*(torch.from_numpy(feeds[k]) for k in inputs))
    return int(counter.get_total_flops())


def bench_networks(names: Sequence[str], backends: Sequence[str], batches: Sequence[int], *, threads: int = 1,
                   repeats: int = 30, max_s: float = 4.0, matmul_n: int = MATMUL_N) -> dict:
    """Measure every (network, backend, batch) and the in-run matmul rate; a JSON-able dict."""
    import onnxruntime as ort
    import torch

    from presenter.engines.base import cpu_model
    from presenter.engines.onnxruntime import OnnxRuntimeEngine
    from presenter.engines.torch_engine import TorchEngine
    from presenter.export.registry import get_network

    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    probe = MatmulProbe(threads, n=matmul_n)
    peak = probe.measure(repeats=20, max_s=3.0)
    rows = []
    for name in names:
        net = get_network(name)
        engines = {"torch": TorchEngine(net, threads=threads)}            # also the FLOP counter's module
        if "onnxruntime" in backends:
            engines["onnxruntime"] = OnnxRuntimeEngine.for_network(net, threads=threads)
        for e in engines.values():
            e.load()
        module = engines["torch"].module
        for batch in batches:
            if batch > net.dim_ranges["batch"][2]:
                continue
            feeds = net.example(module, batch, np.random.default_rng(batch))
            flop = call_flops(module, net.inputs, feeds)
            for backend in backends:
                engine = engines[backend]
                before = probe.measure()["peak"]
                ms = time_calls(lambda: engine.run(feeds), repeats=repeats, max_s=max_s)
                beside = max(before, probe.measure()["peak"])      # the faster neighbour: the share is not flattered
                p50, p95 = float(np.percentile(ms, 50)), float(np.percentile(ms, 95))
                rows.append({"network": name, "runs": net.runs, "backend": backend, "batch": batch, "calls": len(ms),
                             "p50_ms": p50, "p95_ms": p95, "ms_per_item": p50 / batch, "gflop": flop / 1e9,
                             "gflop_per_s": flop / p50 / 1e6, "matmul_gflop_per_s": beside,
                             "matmul_share": flop / p50 / 1e6 / beside})
                log.info("%s %s batch %d: p50 %.2f ms", name, backend, batch, p50)
    peak_after = probe.measure(repeats=20, max_s=3.0)
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
                        "load_avg_1m_before": load_before[0], "load_avg_1m_after": os.getloadavg()[0],
                        "python": platform.python_version(), "torch": torch.__version__,
                        "onnxruntime": ort.__version__},
            "matmul_n": matmul_n, "matmul_gflop_per_s": {"start": peak, "end": peak_after}, "rows": rows}


def goal_line(result: dict) -> str:
    """The issue's goal, judged on the generator at batch 1 with its faster backend."""
    rows = [r for r in result["rows"] if r["network"] == "generator" and r["batch"] == 1]
    if not rows:
        return "generator not measured: no goal line"
    best = max(rows, key=lambda r: r["matmul_share"])
    best_any = max((r for r in result["rows"] if r["network"] == "generator"), key=lambda r: r["matmul_share"])
    verdict = "meets" if best["matmul_share"] >= GOAL_SHARE else "misses"
    return (f"generator live preset, batch 1 ({best['backend']}): {best['gflop_per_s']:.1f} GFLOP/s = "
            f"{best['matmul_share']:.1%} of the in-run matmul rate; {verdict} the {GOAL_SHARE:.0%} goal "
            f"(best at any batch: {best_any['matmul_share']:.0%}, {best_any['backend']} batch {best_any['batch']})")


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result["machine"]
    mm = result["matmul_gflop_per_s"]
    table = Table(title=f"networks on {m['cpu']}, {m['threads']} thread(s); fp32 matmul {result['matmul_n']}^3 at start: "
                        f"torch {mm['start']['torch']:.1f}, ORT {mm['start']['onnxruntime']:.1f} GFLOP/s; at end: "
                        f"torch {mm['end']['torch']:.1f}, ORT {mm['end']['onnxruntime']:.1f}; "
                        f"% matmul = GFLOP/s over the matmul measured beside each row")
    for col in ("network", "backend", "batch", "p50 ms", "p95 ms", "ms/item", "GFLOP/call", "GFLOP/s", "matmul GFLOP/s",
                "% matmul"):
        table.add_column(col, justify="left" if col in ("network", "backend") else "right")
    for r in result["rows"]:
        table.add_row(r["network"], r["backend"], str(r["batch"]), f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
                      f"{r['ms_per_item']:.2f}", f"{r['gflop']:.3f}", f"{r['gflop_per_s']:.1f}",
                      f"{r['matmul_gflop_per_s']:.1f}", f"{r['matmul_share']:.0%}")
    console = Console(width=None if sys.stdout.isatty() else 140)   # a pipe would get 80 columns
    console.print(table)
    console.print(goal_line(result))
    console.print(f"load average (1 min) before/after: {m['load_avg_1m_before']:.2f} / {m['load_avg_1m_after']:.2f} "
                  f"on {m['cores']} cores")


def plot(result: dict, path: Path) -> Path:
    """Two panels: ms per item at batch 1 (log scale) and share of the matmul rate, per network and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    names = list(dict.fromkeys(r["network"] for r in rows))
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    width = 0.8 / (len(backends) * len(batches))
    for k, (backend, batch) in enumerate((b, n) for b in backends for n in batches):
        x = np.arange(len(names)) + (k - (len(backends) * len(batches) - 1) / 2) * width
        by = {r["network"]: r for r in rows if r["backend"] == backend and r["batch"] == batch}
        ms = [by[n]["ms_per_item"] if n in by else np.nan for n in names]
        share = [100 * by[n]["matmul_share"] if n in by else np.nan for n in names]
        axes[0].bar(x, ms, width, label=f"{backend} b{batch}")
        axes[1].bar(x, share, width, label=f"{backend} b{batch}")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("ms per item (p50 / batch)")
    axes[1].axhline(100 * GOAL_SHARE, color="k", ls="--", lw=1, label=f"goal {GOAL_SHARE:.0%} (generator)")
    axes[1].set_ylabel("% of in-run fp32 matmul GFLOP/s")
    for ax in axes:
        ax.set_xticks(np.arange(len(names)), names, rotation=20)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    m = result["machine"]
    fig.suptitle(f"presenter bench networks: {m['cpu']}, {m['threads']} thread(s), {result['date']}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _ints(text: str) -> list[int]:
    from presenter.errors import UserError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--batches {text!r}: give comma-separated positive integers, e.g. 1,4,16") from None
    if not values or min(values) < 1:
        raise UserError(f"--batches {text!r}: give comma-separated positive integers, e.g. 1,4,16")
    return values


def _cmd_bench_networks(args: argparse.Namespace) -> None:
    from presenter.engines.base import record_measurements
    from presenter.errors import UserError
    from presenter.export.registry import NETWORKS, get_network

    names = list(NETWORKS) if args.networks == "all" else [get_network(n.strip()).name for n in args.networks.split(",")]
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    if args.plot and importlib.util.find_spec("matplotlib") is None:     # say so before minutes of timing
        raise UserError("--plot needs matplotlib, which is not installed: pip install 'presenter[dev]' "
                        "(or pip install matplotlib)")
    if args.matmul_n < 64:
        raise UserError(f"--matmul-n {args.matmul_n}: must be at least 64 (a smaller matmul measures call overhead)")
    result = bench_networks(names, backends, _ints(args.batches), threads=args.threads, repeats=args.repeats,
                            max_s=args.max_seconds, matmul_n=args.matmul_n)
    print_table(result)
    record_measurements({n: {r["backend"]: r["p50_ms"] for r in result["rows"] if r["network"] == n and r["batch"] == 1}
                         for n in names}, threads=args.threads)
    if args.json:
        tmp = args.json.with_name(f".{args.json.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.json)
        print(f"wrote {args.json}")
    if args.plot:
        print(f"wrote {plot(result, args.plot)}")


def add_bench_networks_command(bsub: argparse._SubParsersAction, formatter: type) -> None:
    """Register `presenter bench networks` under `presenter bench`."""
    n = bsub.add_parser("networks", formatter_class=formatter,
                        help="per-network ms, GFLOP/s and share of the in-run matmul rate, per backend",
                        description="Time each inference network (export registry) on torch and ONNX Runtime at "
                                    "several batch sizes on live-shaped inputs: ms p50/p95, GFLOP per call "
                                    "(torch FlopCounterMode), achieved GFLOP/s and its share of a dense fp32 "
                                    "matmul timed in the same run with the same threads (the practical peak). "
                                    "Batch-1 results are stored for '--backend auto'.\n\n"
                                    "Examples:\n  presenter bench networks\n"
                                    "  presenter bench networks --networks generator --batches 1,8 --threads 2\n"
                                    "  presenter bench networks --json nets.json --plot nets.png")
    n.add_argument("--networks", default="all", help="comma-separated network names, or all")
    n.add_argument("--backend", choices=(*BACKENDS, "all"), default="all", help="backend(s) to time")
    n.add_argument("--batches", default="1,4,16", help="comma-separated batch sizes (above a network's max are skipped)")
    n.add_argument("--threads", type=int, default=1, help="intra-op threads for every backend and the matmul")
    n.add_argument("--repeats", type=int, default=30, help="timed calls per cell (fewer if --max-seconds runs out)")
    n.add_argument("--max-seconds", type=float, default=4.0, help="time cap per cell, seconds (at least 5 calls)")
    n.add_argument("--matmul-n", type=int, default=MATMUL_N, help="side of the reference matmul (N x N by N x N)")
    n.add_argument("--json", type=Path, default=None, help="write the results as JSON here")
    n.add_argument("--plot", type=Path, default=None, help="write a PNG plot here (needs matplotlib)")
    n.set_defaults(func=_cmd_bench_networks)
