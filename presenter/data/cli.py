"""`presenter data synth` and `presenter data prepare` (wired into the `data` group of presenter.cli)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from presenter.paths import home


def _cmd_synth(args: argparse.Namespace) -> None:
    from presenter.data.synth import SynthConfig, synth

    cfg = SynthConfig(clips=args.clips, seed=args.seed, workers=args.workers,
                      identities_dir=str(args.identities) if args.identities else None)
    sys.stdout.write(json.dumps({"output": str(args.output), **dataclasses.asdict(cfg)}, indent=2) + "\n")
    if args.dry_run:
        return
    import time

    t0 = time.perf_counter()
    before = len(list((args.output / "clips").glob("*/meta.json"))) if (args.output / "clips").is_dir() else 0
    index = synth(args.output, cfg)
    minutes = (time.perf_counter() - t0) / 60
    made = len(index["clips"]) - before
    secs = sum(c["seconds"] for c in index["clips"])
    sys.stdout.write(f"{len(index['clips'])} clips, {secs / 3600:.2f} h of audio, "
                     f"{sum(c['n_frames'] for c in index['clips'])} frames in {args.output}; this run made {made} "
                     f"clips in {minutes:.1f} min ({made / max(minutes, 1e-9):.1f} clips/min, {cfg.workers} workers)\n")


def _cmd_prepare(args: argparse.Namespace) -> None:
    from presenter.data.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(min_face_px=args.min_face_px, min_clip_s=args.min_clip_s, max_clip_s=args.max_clip_s)
    sys.stdout.write(json.dumps({"input": str(args.input), "output": str(args.output),
                                 **dataclasses.asdict(cfg)}, indent=2) + "\n")
    if args.dry_run:
        return
    report = prepare(args.input, args.output, cfg)
    ok = [e for e in report["files"] if e["status"] == "ok"]
    sys.stdout.write(f"{len(ok)} of {len(report['files'])} files ingested, "
                     f"{report['seconds_of_video']:.1f} s of video at {report['real_time_factor']:.2f}x real time; "
                     f"report: {args.output / 'prepare_report.json'}\n")


def add_corpus_commands(dsub: argparse._SubParsersAction, formatter: type) -> None:
    s = dsub.add_parser("synth", formatter_class=formatter, help="make the synthetic talking-head corpus",
                        description="Synthesise speech with exact phone timing, turn it into mouth motion and render "
                                    "portraits talking; parallel, deterministic for a seed, resumable (docs/corpus.md)."
                                    "\n\nExamples:\n  presenter data synth -o ~/.cache/presenter/corpus/synth-v1 "
                                    "--clips 1200 --workers 2\n  presenter data synth -o /tmp/c --clips 8 --workers 1")
    s.add_argument("-o", "--output", type=Path, default=home() / "corpus" / "synth-v1", help="corpus folder")
    s.add_argument("--clips", type=int, default=200, help="clips in the corpus (a rerun adds the missing ones)")
    s.add_argument("--seed", type=int, default=0, help="corpus seed: clip i is the same for the same seed")
    s.add_argument("--workers", type=int, default=2, help="worker processes")
    s.add_argument("--identities", type=Path, default=None,
                   help="also animate these identities (presenter data identities); default: shipped portraits")
    s.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    s.set_defaults(func=_cmd_synth)

    p = dsub.add_parser("prepare", formatter_class=formatter, help="ingest real talking videos into the corpus format",
                        description="Decode videos (mp4/mkv/webm/mov/avi with audio), track and fit the face, cut "
                                    "clips of one large face without scene cuts, and write the corpus format. Unusable "
                                    "files are skipped with a reason in prepare_report.json.\n\nExample:\n"
                                    "  presenter data prepare my_videos/ -o ~/.cache/presenter/corpus/real-v1")
    p.add_argument("input", type=Path, help="folder searched recursively for videos")
    p.add_argument("-o", "--output", type=Path, default=home() / "corpus" / "real-v1", help="corpus folder")
    p.add_argument("--min-face-px", type=float, default=96.0, help="smallest face width kept, source pixels")
    p.add_argument("--min-clip-s", type=float, default=2.0, help="shortest clip kept, seconds")
    p.add_argument("--max-clip-s", type=float, default=10.0, help="longer runs are split, seconds")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    p.set_defaults(func=_cmd_prepare)
