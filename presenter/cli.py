"""`presenter` command line: one entry point, one subcommand per job.

Examples:
  presenter avatar create --image me.jpg -o ~/avatars/me
  presenter avatar create --video me.mp4 -o ~/avatars/me-video
  presenter avatar info ~/avatars/me
  presenter bench stages --repeats 200
  presenter bench live --seconds 30 --json live.json
  presenter data identities --count 650 --seed 0
  presenter data mouth-prior
  presenter live --mic
  presenter verify out.mp4
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from presenter.errors import UserError, run_command


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _cmd_avatar_create(args: argparse.Namespace) -> None:
    from presenter.avatar.create import create_from_image, create_from_video

    if bool(args.image) == bool(args.video):
        raise UserError("give exactly one of --image FILE or --video FILE")
    if args.image:
        out = create_from_image(args.image, args.output, attribution=args.attribution, force=args.force)
    else:
        out = create_from_video(args.video, args.output, attribution=args.attribution, force=args.force)
    logging.getLogger("presenter").info("avatar pack ready: %s (preview: %s)", out, out / "preview.png")


def _cmd_avatar_info(args: argparse.Namespace) -> None:
    from presenter.avatar.pack import load_pack

    pack = load_pack(args.pack)
    sys.stdout.write(json.dumps(pack.manifest, indent=2) + "\n")


def _cmd_avatar_finetune(args: argparse.Namespace) -> None:
    from presenter.train.finetune import finetune

    if args.minutes <= 0 or (args.steps is not None and args.steps < 1):
        raise UserError("--minutes must be positive and --steps at least 1")
    r = finetune(args.pack, video=args.video, minutes=args.minutes, steps=args.steps, threads=args.threads)
    sys.stdout.write(f"fine-tuned on {r.frames_trained} frames, {r.steps} steps, {r.minutes:.1f} min; held-out "
                     f"{r.frames_held_out} frames: mouth PSNR {r.before['psnr']:.2f} -> {r.after['psnr']:.2f} dB, "
                     f"SSIM {r.before['ssim']:.4f} -> {r.after['ssim']:.4f}\nstored in {r.weights}\n")


def _cmd_bench_stages(args: argparse.Namespace) -> None:
    from presenter.bench import run_face_bench

    run_face_bench(repeats=args.repeats, pack_dir=args.avatar)


def _cmd_bench_live(args: argparse.Namespace) -> None:
    from presenter.bench_live import run_live_bench

    run_live_bench(avatar=args.avatar, engine=args.engine, seconds=args.seconds, workers=args.workers,
                   browser=args.browser, encode=not args.no_encode, json_path=args.json,
                   encoders=[_encoder_option(e) for e in args.encoder or ["int8/2"]], degrade=not args.no_degrade)


def _encoder_option(text: str) -> tuple[str, int]:
    """'int8' or 'int8/2' -> (precision, frames per call)."""
    from presenter.errors import UserError

    precision, _, every = text.partition("/")
    if precision not in ("fp32", "int8") or every not in ("", "1", "2"):
        raise UserError(f"--encoder {text!r}: give PRECISION[/EVERY] with PRECISION fp32 or int8 and EVERY 1 or 2, "
                        "e.g. fp32 or int8/2")
    return precision, int(every or 1)


def _add_bench_commands(sub: argparse._SubParsersAction) -> None:
    """`presenter bench stages|live`: numbers of this machine (the tests assert behaviour only)."""
    from presenter.stream.pipeline import ENGINES

    bench = sub.add_parser("bench", formatter_class=_Formatter,
                           help="measure this machine: stage timings, live sessions",
                           description="Measure speed on this machine. The test suite asserts behaviour only; frame "
                                       "rates, latencies, reused frames and CPU shares are measured here.\n\n"
                                       "Examples:\n  presenter bench stages --repeats 200\n"
                                       "  presenter bench live --seconds 30 --json live.json\n"
                                       "  presenter bench live --engine baseline --browser")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    b = bsub.add_parser("stages", formatter_class=_Formatter, help="per-stage timings (ms/frame) of the face pipeline",
                        description="Time each stage of the face pipeline on the default avatar (or --avatar) "
                                    "and print a table.\n\nExample:\n  presenter bench stages --repeats 200")
    b.add_argument("--repeats", type=int, default=100, help="timed runs per stage (median reported)")
    b.add_argument("--avatar", type=Path, default=None, help="avatar pack folder (default: the built-in avatar)")
    b.set_defaults(func=_cmd_bench_stages)

    lv = bsub.add_parser("live", formatter_class=_Formatter,
                         help="a live session on real speech: fps, reused frames, latency p50/p95, CPU per second",
                         description="Run one live session (PresenterStream: driver, renderer, VP8/Opus encode) on "
                                     "real read speech (Debian's pocketsphinx test data) pushed in real time, and "
                                     "report frames per second, reused frames, late poses, audio latency p50/p95, "
                                     "render and encode times and the process's CPU seconds per second of audio, "
                                     "beside the load average. --browser adds a loopback call from Chromium to "
                                     "'python -m presenter.serve' (shown fps, mic-to-screen latency, A/V offset, "
                                     "concealed audio, server CPU).\n\n"
                                     "Examples:\n  presenter bench live\n"
                                     "  presenter bench live --seconds 60 --json ~/bench-live.json\n"
                                     "  presenter bench live --engine baseline --browser --seconds 20\n"
                                     "  presenter bench live --encoder fp32 --encoder int8 --encoder int8/2")
    lv.add_argument("--engine", default="auto", choices=ENGINES, help="speech-to-face engine")
    lv.add_argument("--avatar", default="default", help="'default' or an avatar pack folder")
    lv.add_argument("--seconds", type=float, default=30.0, help="seconds of speech pushed (and of the browser call)")
    lv.add_argument("--workers", type=int, default=2, help="worker threads for motion and rendering, as the server's")
    lv.add_argument("--encoder", action="append", default=None, metavar="PRECISION[/EVERY]",
                    help="the SyncFormer's speech encoder: fp32 or int8, and frames per encoder call (/1 or /2); "
                         "repeat to compare settings side by side in one run (default: int8/2, the server's default)")
    lv.add_argument("--no-degrade", action="store_true",
                    help="never fall back to the cheaper renderer when renders miss their frames: the full path's "
                         "CPU cost on a loaded machine")
    lv.add_argument("--no-encode", action="store_true", help="skip the VP8/Opus encode of each frame")
    lv.add_argument("--browser", action="store_true", help="also a loopback call from Chromium to the server")
    lv.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    lv.set_defaults(func=_cmd_bench_live)

    from presenter.engines.bench import add_bench_networks_command

    add_bench_networks_command(bsub, _Formatter)


def _cmd_data_identities(args: argparse.Namespace) -> None:
    import dataclasses

    from presenter.data.identities import Thresholds, generate_identities, import_images

    thr = dataclasses.replace(Thresholds(), max_yaw_deg=args.max_yaw, max_pitch_deg=args.max_pitch,
                              duplicate_distance=args.duplicate_distance)
    if args.images:
        resolved = {"output": str(args.output), "images": str(args.images), "attribution": args.attribution,
                    "thresholds": dataclasses.asdict(thr)}
    else:
        resolved = {"output": str(args.output), "count": args.count, "seed": args.seed, "psi": args.psi,
                    "workers": args.workers, "max_candidates": args.max_candidates,
                    "thresholds": dataclasses.asdict(thr)}
    sys.stdout.write(json.dumps(resolved, indent=2) + "\n")
    if args.dry_run:
        return
    if args.images:
        import_images(args.output, args.images, attribution=args.attribution, thresholds=thr,
                      progress=sys.stderr.isatty())
        return
    generate_identities(args.output, count=args.count, seed=args.seed, psi=args.psi, thresholds=thr,
                        workers=args.workers, max_candidates=args.max_candidates, progress=sys.stderr.isatty())


def _cmd_data_mouth_prior(args: argparse.Namespace) -> None:
    from presenter.data.mouth_prior import PriorOptions, run_mouth_prior

    opts = PriorOptions(n_samples=args.samples, n_eval=args.eval_identities, steps=args.steps,
                        splits=tuple(args.splits.split(",")), limit=args.limit)
    resolved = {"input": str(args.input), "output": str(args.output), "grid": str(args.grid or ""),
                **opts.as_dict()}
    sys.stdout.write(json.dumps(resolved, indent=2) + "\n")
    if args.dry_run:
        return
    run_mouth_prior(args.input, args.output, opts, progress=sys.stderr.isatty(), grid_path=args.grid)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """`presenter data ...`: corpus building. Each job adds its parser to `dsub` here."""
    from presenter.paths import home

    data = sub.add_parser("data", help="build training data (identities, mouth prior, corpus)",
                          formatter_class=_Formatter)
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    d = dsub.add_parser("identities", formatter_class=_Formatter,
                        help="generate face identities with the shipped face GAN",
                        description="Generate synthetic identities (MobileStyleGAN from random-face), keep usable "
                                    "ones (one large, near-frontal face with open eyes, no near-duplicates), and "
                                    "write aligned crops, fitted meshes and metadata with a train/val/test split. "
                                    "Deterministic for a seed; resumes an interrupted run in the same folder. "
                                    "The faces descend from FFHQ/StyleGAN2: non-commercial (docs/identities.md)."
                                    " --images DIR takes your own photos (one person each) through the same checks "
                                    "into the same format instead."
                                    "\n\nExamples:\n  presenter data identities --count 650 --seed 0\n"
                                    "  presenter data identities -o /tmp/ids --count 20 --seed 3 --workers 2\n"
                                    "  presenter data identities -o ~/ids-own --images photos/ "
                                    "--attribution 'own photos, all rights held'")
    d.add_argument("-o", "--output", type=Path, default=home() / "identities", help="identities folder")
    d.add_argument("--count", type=int, default=100, help="identities to keep in the folder (all splits)")
    d.add_argument("--seed", type=int, default=0, help="seed of the candidate stream; same seed, same identities")
    d.add_argument("--psi", type=float, default=0.7, help="truncation towards the mean face, (0, 1]; 1 = none")
    d.add_argument("--workers", type=int, default=1, help="worker processes (each loads the models)")
    d.add_argument("--max-candidates", type=int, default=None,
                   help="stop after this many candidates (default: 5 x count + 20)")
    d.add_argument("--max-yaw", type=float, default=20.0, help="largest |yaw| kept, degrees")
    d.add_argument("--max-pitch", type=float, default=20.0, help="largest |pitch| kept, degrees")
    d.add_argument("--duplicate-distance", type=float, default=0.45,
                   help="dlib identity distance below which a face counts as a near-duplicate")
    d.add_argument("--images", type=Path, default=None,
                   help="folder of your own photos to import instead of generating (one person per photo)")
    d.add_argument("--attribution", default="", help="with --images: photo author and licence, kept per identity")
    d.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    d.set_defaults(func=_cmd_data_identities)

    m = dsub.add_parser("mouth-prior", formatter_class=_Formatter,
                        help="find the mouth-opening direction in the face GAN and export graded sequences",
                        description="Regress the landmarker's inner-lip opening on the GAN's w, check the edit on "
                                    "test identities (opening, dlib identity distance, pose drift, eyes, sealed "
                                    "lips) and export per identity a graded sequence (sealed to wide open) with "
                                    "fitted meshes.\n\nExamples:\n  presenter data mouth-prior\n"
                                    "  presenter data mouth-prior -i /tmp/ids -o /tmp/prior --samples 300 --limit 4\n"
                                    "  presenter data mouth-prior --splits test   # after growing the identities")
    m.add_argument("-i", "--input", type=Path, default=home() / "identities", help="identities folder")
    m.add_argument("-o", "--output", type=Path, default=home() / "mouth_prior", help="output folder")
    m.add_argument("--samples", type=int, default=2000,
                   help="(w, opening) samples for the regression (corpus candidates first, then new ones)")
    m.add_argument("--eval-identities", type=int, default=64, help="test identities used to check the edit")
    m.add_argument("--steps", type=int, default=8, help="frames per exported sequence (sealed to wide open)")
    m.add_argument("--splits", default="train,val,test",
                   help="comma-separated splits to export; sequences already exported for other splits stay "
                        "in sequences/index.json (e.g. 'test' after growing the identities: new test "
                        "identities only, the direction is reused)")
    m.add_argument("--limit", type=int, default=None, help="export at most this many identities (default: all)")
    m.add_argument("--grid", type=Path, default=None,
                   help="PNG grid of three test identities along the edit, GAN above the baseline warp "
                        "(default: OUTPUT/grid.png)")
    m.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    m.set_defaults(func=_cmd_data_mouth_prior)

    from presenter.data.cli import add_corpus_commands

    add_corpus_commands(dsub, _Formatter)


def _cmd_live(args: argparse.Namespace) -> None:
    from presenter.server.local import run_live

    run_live(args)


def _add_live_command(sub: argparse._SubParsersAction) -> None:
    """`presenter live`: the live server, optionally fed by the local microphone."""
    from presenter.serve import add_server_args

    lv = sub.add_parser("live", formatter_class=_Formatter,
                        help="the live presenter: server, local microphone, virtual camera",
                        description="Serve the live presenter (as 'python -m presenter.serve') and optionally drive "
                                    "it from this machine's microphone and show it on a virtual camera.\n\n"
                                    "Examples:\n  presenter live --mic\n  presenter live --mic --virtual-camera\n"
                                    "  presenter live --port 9000 --avatar ~/avatars/me")
    add_server_args(lv)
    lv.add_argument("--mic", action="store_true", help="put the local microphone on air (sounddevice)")
    lv.add_argument("--mic-device", default=None, help="input device name or index (default: the system's)")
    lv.add_argument("--virtual-camera", action="store_true",
                    help="also send the program's video to a v4l2loopback camera (pyvirtualcam)")
    lv.set_defaults(func=_cmd_live)


def _cmd_verify(args: argparse.Namespace) -> None:
    from presenter.watermark import Z_FOUND, verify_file

    if args.max_frames < 1:
        raise UserError(f"--max-frames must be at least 1, got {args.max_frames}")
    d = verify_file(args.file, max_frames=args.max_frames)
    seen = f"pilot z {d.z:.1f}, scale {d.scale[1]:.2f}, frames {d.frames_found}/{d.frames}"
    if d.found and d.payload is not None:
        sys.stdout.write(f"{args.file}: found: presenter {d.payload.version}, run id {d.payload.run_id:08x}, "
                         f"confidence {d.confidence:.6f} ({seen})\n")
        return
    why = "a pattern is there but its payload does not decode" if d.z >= Z_FOUND else f"pilot z below {Z_FOUND}"
    sys.stdout.write(f"{args.file}: not found: {why} ({seen})\n")
    raise SystemExit(1)


def _add_verify_command(sub: argparse._SubParsersAction) -> None:
    """`presenter verify FILE`: is this image or video the presenter's? Exit 0 found, 1 not, 2 unreadable."""
    v = sub.add_parser("verify", formatter_class=_Formatter,
                       help="find the presenter's invisible watermark in an image or a video",
                       description="Look for the invisible watermark every presenter frame carries and print its "
                                   "payload (presenter version, run or job id) and a confidence. Exit status: 0 "
                                   "found, 1 not found, 2 unreadable file.\n\n"
                                   "Examples:\n  presenter verify recording.mp4\n  presenter verify frame.png\n"
                                   "  presenter verify call.webm --max-frames 200")
    v.add_argument("file", type=Path, help="image (PNG, JPEG, ...) or video (any container PyAV reads)")
    v.add_argument("--max-frames", type=int, default=48,
                   help="video frames read, spread over its length (frames)")
    v.set_defaults(func=_cmd_verify)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="presenter", description=__doc__, formatter_class=_Formatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    avatar = sub.add_parser("avatar", help="make and inspect avatar packs", formatter_class=_Formatter)
    asub = avatar.add_subparsers(dest="avatar_command", required=True, metavar="ACTION")
    c = asub.add_parser("create", formatter_class=_Formatter,
                        help="make a pack from a portrait or a video",
                        description="Make an avatar pack: aligned crops, fitted meshes, neutral mesh, masks, "
                                    "transforms, reference frames and a seamless idle loop.\n\n"
                                    "Examples:\n  presenter avatar create --image me.jpg -o packs/me\n"
                                    "  presenter avatar create --video me.mp4 -o packs/me --force")
    c.add_argument("--image", type=Path, help="portrait photo of one face (PNG/JPEG/...); idle loop is synthesised")
    c.add_argument("--video", type=Path, help="video of the person, 2-10 s used; idle loop cut at a seamless point")
    c.add_argument("-o", "--output", type=Path, required=True, help="pack folder to create (must not exist)")
    c.add_argument("--attribution", default="", help="credit line stored in the manifest (photo author, licence)")
    c.add_argument("--force", action="store_true", help="replace an existing pack at --output")
    c.set_defaults(func=_cmd_avatar_create)
    i = asub.add_parser("info", help="print a pack's manifest", formatter_class=_Formatter)
    i.add_argument("pack", type=Path, help="pack folder")
    i.set_defaults(func=_cmd_avatar_info)
    f = asub.add_parser("finetune", formatter_class=_Formatter,
                        help="fine-tune the generator on the person's footage (stored in the pack)",
                        description="Fine-tune the mouth generator on footage of the pack's person, self-supervised "
                                    "(each frame's own mesh and masked frame reconstruct it), and store it in "
                                    "PACK/generator, which the live server and the offline tools then use. The "
                                    "footage's last 20 %% is held out and scored before and after (mouth PSNR/SSIM). "
                                    "An interrupted run resumes.\n\n"
                                    "Examples:\n  presenter avatar finetune ~/avatars/me --video me-talking.mp4\n"
                                    "  presenter avatar finetune ~/avatars/me-video --minutes 30")
    f.add_argument("pack", type=Path, help="pack folder")
    f.add_argument("--video", type=Path, default=None,
                   help="footage of the person talking, 2-10 s used (default: the pack's own frames, "
                        "if it was made from a video)")
    f.add_argument("--minutes", type=float, default=10.0, help="wall-time budget (minutes)")
    f.add_argument("--steps", type=int, default=None, help="at most this many steps (default: 2000)")
    f.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    f.set_defaults(func=_cmd_avatar_finetune)

    _add_bench_commands(sub)
    _add_data_commands(sub)
    from presenter.train.cli import add_train_commands

    add_train_commands(sub, _Formatter)
    _add_live_command(sub)
    _add_verify_command(sub)
    from presenter.offline.cli import add_offline_commands

    add_offline_commands(sub, _Formatter)
    from presenter.export.cli import add_export_command

    add_export_command(sub, _Formatter)
    return p


# Modules that only an extra installs (pyproject.toml), by import name -> the extras that have it.
# A plain `pip install .` runs `presenter --help`; a command that reaches for one of these says
# what to install: the extra meant for that command (COMMAND_EXTRA) when it has the module.
EXTRAS = {
    "aiohttp": ("serve",), "aiortc": ("serve",), "aioice": ("serve",), "webrtcvad": ("serve",),
    "prometheus_client": ("serve",), "sounddevice": ("serve",), "pyvirtualcam": ("serve",),
    "torch": ("train", "serve"), "pocketsphinx": ("train",), "openvino": ("train",), "dlib": ("train",),
    "pytorch_msssim": ("train",), "onnx": ("onnx",), "onnxruntime": ("onnx", "serve"), "tensorrt": ("tensorrt",),
    "playwright": ("dev",), "ray": ("ray",),
}
COMMAND_EXTRA = {"live": "serve", "bench": "serve", "train": "train", "data": "train", "avatar": "train",
                 "export": "onnx", "lipsync": "serve", "swap": "serve"}


def _run(args: argparse.Namespace) -> None:
    """Run the subcommand; a missing optional dependency becomes a UserError naming its extra."""
    try:
        args.func(args)
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in EXTRAS:
            raise
        extras = EXTRAS[top]
        extra = COMMAND_EXTRA.get(args.command) if COMMAND_EXTRA.get(args.command) in extras else extras[0]
        raise UserError(f"'presenter {args.command}' needs {top}, which is not installed: "
                        f"pip install 'presenter[{extra}]'") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("presenter", lambda: _run(args), verbose=args.verbose,
                       fmt="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
