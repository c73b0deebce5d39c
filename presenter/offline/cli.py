"""`presenter lipsync` and `presenter swap`: the offline tools on the live path's driver and renderer seams."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_lipsync(args: argparse.Namespace) -> None:
    from presenter.errors import UserError
    from presenter.offline.lipsync import LipsyncOptions, lipsync

    if args.batch is not None:
        _lipsync_batch(args)
        return
    if args.face is None:
        raise UserError("give --face VIDEO|IMAGE (the face to dub), or --batch JOBS.csv")
    opts = LipsyncOptions(face=args.face, audio=args.audio, driver=args.driver, output=args.output, engine=args.engine,
                          renderer=args.renderer, face_index=args.face_index, style=args.style, force=args.force)
    sys.stdout.write(json.dumps(opts.resolved()) + "\n")
    if args.dry_run:
        return
    result = lipsync(opts, progress=sys.stderr.isatty())
    sys.stdout.write(f"{result.output}: {result.frames} frames, {result.size[0]}x{result.size[1]} at {result.fps:.3g} fps, "
                     f"{result.duration_s:.2f} s; mouth {result.engine}, renderer {result.renderer}; "
                     f"{result.frames_without_face} frames without a face passed through; watermark job id "
                     f"{result.job_id:08x}; {result.compute_s:.1f} s, real-time factor {result.rtf:.2f} "
                     f"(frames alone {result.render_rtf:.2f}), {result.cpu_per_s:.2f} CPU s per s of video\n")


def _lipsync_batch(args: argparse.Namespace) -> None:
    import time

    from presenter.errors import UserError
    from presenter.offline.batch import default_workers, run_batch, summary

    if any(v is not None for v in (args.face, args.audio, args.driver, args.style)):
        raise UserError("--batch takes the faces, speech, drivers and styles from the CSV's columns; "
                        "drop --face/--audio/--driver/--style")
    if args.ray is not None and args.workers is not None:
        raise UserError(f"--ray {args.ray} runs each row as a Ray task and the cluster sizes them; drop --workers")
    workers = default_workers() if args.workers is None else args.workers
    resolved = {"batch": str(args.batch), "output_dir": str(args.output), "engine": args.engine,
                "renderer": args.renderer, "workers": None if args.ray else workers, "ray": args.ray}
    sys.stdout.write(json.dumps(resolved) + "\n")
    if args.dry_run:
        return
    t0 = time.monotonic()
    outcomes = run_batch(args.batch, args.output, engine=args.engine, renderer=args.renderer, workers=workers,
                         ray_address=args.ray)
    sys.stdout.write(summary(outcomes, time.monotonic() - t0) + "\n")
    failed = [o.row.number for o in outcomes if o.status == "failed"]
    if failed:
        raise UserError(f"{len(failed)} of {len(outcomes)} rows failed (rows {', '.join(map(str, failed))}); fix them "
                        "and run the same command again: finished rows are skipped")


def _cmd_swap(args: argparse.Namespace) -> None:
    from presenter.offline.swap import SwapOptions, swap

    opts = SwapOptions(source=args.source, target=args.target, output=args.output, consent=args.consent,
                       force=args.force, weights=args.weights, face_index=args.face_index)
    sys.stdout.write(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}) + "\n")
    if args.dry_run:
        return
    swap(opts, progress=sys.stderr.isatty())


def add_offline_commands(sub: argparse._SubParsersAction, formatter: type) -> None:
    """Register the offline commands on the top-level parser."""
    from presenter.server.config import ServerConfig
    from presenter.stream.pipeline import ENGINES, RENDERERS

    d = ServerConfig()
    p = sub.add_parser(
        "lipsync", formatter_class=formatter, help="dub a video or a still with new speech (MP4 out)",
        description="Re-animate the mouth of a face to new speech (or to another person's talking video, --driver) and write an H.264 + AAC MP4 with the speech "
                    "muxed. A video keeps its frame rate and size and everything outside the mouth; frames where "
                    "the face is lost pass through unchanged; audio longer than the video plays it back and forth, "
                    "shorter audio cuts it. A still becomes an idle loop (blinks, sway) at 25 fps. Every frame carries "
                    "the invisible watermark ('presenter verify OUT.mp4' finds it, with this job's id) and the file "
                    "is tagged SYNTHETIC in its metadata. The mouth driver and renderer are the live server's.\n\n"
                    "Examples:\n  presenter lipsync --face talk.mp4 --audio dub.wav -o dubbed.mp4\n"
                    "  presenter lipsync --face portrait.jpg --audio speech.m4a -o portrait-talks.mp4\n"
                    "  presenter lipsync --face talk.mp4 --audio dub.mp3 -o out.mp4 --engine baseline "
                    "--renderer baseline --force\n"
                    "  presenter lipsync --face group.mp4 --face-index 1 --audio line.wav -o second-person.mp4\n"
                    "  presenter lipsync --face talk.mp4 --audio dub.wav --style lively.mp4 -o lively.mp4\n"
                    "  presenter lipsync --face portrait.jpg --driver someone-talking.mp4 -o follows.mp4\n"
                    "  presenter lipsync --batch jobs.csv -o dubbed/        # rerun to resume\n"
                    "  presenter lipsync --batch jobs.csv -o dubbed/ --ray local")
    p.add_argument("--face", type=Path, default=None,
                   help="video (any container/codec PyAV reads) or image (PNG, JPEG, ...) of the face to dub")
    p.add_argument("--audio", type=Path, default=None,
                   help="the new speech: any audio file, or a video whose soundtrack is taken")
    p.add_argument("--driver", type=Path, default=None,
                   help="instead of --audio: a video of someone talking; their mouth motion (from their own "
                        "neutral face) drives the face's mouth and their soundtrack is muxed")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="MP4 file to write (written atomically); with --batch, the output folder")
    p.add_argument("--batch", type=Path, default=None,
                   help="CSV of jobs, one per row (columns face, audio or driver, optional style and output); "
                        "finished rows are skipped, failed ones reported, a table printed at the end")
    p.add_argument("--workers", type=int, default=None,
                   help="with --batch: jobs at once, in a process pool when more than one (default: one per two "
                        "cores; each job keeps about two busy)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="with --batch: run each row as a Ray task (needs 'presenter[ray]') on the cluster at "
                        "ADDRESS: 'auto' (a cluster this machine belongs to), 'host:6379' or 'ray://host:10001', "
                        "or 'local' to start one sized to this machine; workers must see the CSV's paths "
                        "(default: no Ray, a local process pool)")
    p.add_argument("--engine", default=d.engine, choices=ENGINES,
                   help="mouth driver, as the live server's --engine (same default): syncformer = the shipped "
                        "Style-SyncFormer, baseline = loudness (no learning)")
    p.add_argument("--renderer", default=d.renderer, choices=RENDERERS,
                   help="face renderer, as the live server's --renderer (same default): generator = the trained "
                        "generator, baseline = the warp (no learning)")
    p.add_argument("--face-index", type=int, default=0,
                   help="which face when there are several: 0 = the largest where first seen, 1 = the next, ...; "
                        "that face is then followed")
    p.add_argument("--style", type=Path, default=None,
                   help="a talking clip (video) whose speaking style (amplitude, articulation) the SyncFormer "
                        "takes; default: the SyncFormer's own style")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    p.set_defaults(func=_cmd_lipsync)

    w = sub.add_parser(
        "swap", formatter_class=formatter, help="put one person's face into another's video (needs --consent)",
        description="Face swap: the target video's expressions and head pose on the source's face, drawn by the "
                    "swap generator (the whole face painted from a reference of the source; docs/offline.md, 'Face "
                    "swap', shows what it can and cannot do). Refused without --consent STATEMENT (who agreed to "
                    "what). The output carries the statement, the sha256 of both inputs and the time in its "
                    "metadata, the invisible watermark and the SYNTHETIC tag; the target's soundtrack is kept and "
                    "frames without a face pass through.\n\n"
                    "Examples:\n  presenter swap --source ana.jpg --target ben.mp4 -o swapped.mp4 "
                    "--consent \"Ana Lima and Ben Okoro agreed on 2026-12-01 to this swap for the course trailer\"")
    w.add_argument("--source", type=Path, required=True, help="image or video of the face to put in")
    w.add_argument("--target", type=Path, required=True, help="video whose face is replaced")
    w.add_argument("-o", "--output", type=Path, required=True, help="MP4 file to write")
    w.add_argument("--consent", default=None,
                   help="statement that the people shown agreed (who, to what, when); required")
    w.add_argument("--face-index", type=int, default=0, help="which target face: 0 the largest, 1 the next...")
    w.add_argument("--weights", type=Path, default=None,
                   help="swap generator folder (default: the shipped one; 'presenter train generator --task swap' "
                        "writes RUN/ema)")
    w.add_argument("--force", action="store_true", help="replace an existing output file")
    w.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    w.set_defaults(func=_cmd_swap)
