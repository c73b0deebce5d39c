"""`presenter` command line: one entry point, one subcommand per job.

Examples:
  presenter avatar create --image me.jpg -o ~/avatars/me
  presenter avatar create --video me.mp4 -o ~/avatars/me-video
  presenter avatar info ~/avatars/me
  presenter bench --repeats 200
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from presenter.errors import UserError


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


def _cmd_bench(args: argparse.Namespace) -> None:
    from presenter.bench import run_face_bench

    run_face_bench(repeats=args.repeats, pack_dir=args.avatar)


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

    b = sub.add_parser("bench", formatter_class=_Formatter, help="per-stage timings (ms/frame) on this machine",
                       description="Time each stage of the face pipeline on the default avatar (or --avatar) "
                                   "and print a table.\n\nExample:\n  presenter bench --repeats 200")
    b.add_argument("--repeats", type=int, default=100, help="timed runs per stage (median reported)")
    b.add_argument("--avatar", type=Path, default=None, help="avatar pack folder (default: the built-in avatar)")
    b.set_defaults(func=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except UserError as e:
        sys.stderr.write(f"presenter: error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
