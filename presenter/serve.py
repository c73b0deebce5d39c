"""`python -m presenter.serve`: the live presenter server.

Open the printed address in Chromium or Firefox, press Start and allow the microphone: the
presenter lip-syncs you. OBS shows the same feed through a Browser Source on /viewer.

Examples:
  python -m presenter.serve
  python -m presenter.serve --port 9000 --avatar ~/avatars/me --max-sessions 2
  PRESENTER_TOKEN=s3cret python -m presenter.serve --host 0.0.0.0
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from typing import TYPE_CHECKING

from presenter.errors import run_command

if TYPE_CHECKING:
    from presenter.server.config import ServerConfig

log = logging.getLogger("presenter.serve")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def add_server_args(p: argparse.ArgumentParser) -> None:
    """The server options, shared by `python -m presenter.serve` and `presenter live`."""
    from presenter.server.config import ServerConfig
    from presenter.stream.pipeline import ENGINES, RENDERERS

    d = ServerConfig()
    p.add_argument("--host", default=d.host, help="bind address; off loopback a token is required")
    p.add_argument("--port", type=int, default=d.port, help="TCP port")
    p.add_argument("--avatar", default=d.avatar, help="'default' (made on first run) or an avatar pack folder")
    p.add_argument("--engine", default=d.engine, choices=ENGINES,
                   help="speech to mouth motion: auto = the trained Style-SyncFormer (it ships), baseline = loudness")
    p.add_argument("--renderer", default=d.renderer, choices=RENDERERS,
                   help="face renderer: auto = the trained generator when its weights are installed, "
                        "else the baseline warp renderer")
    p.add_argument("--encoder", default=d.encoder, choices=("fp32", "int8"),
                   help="the SyncFormer's speech encoder precision: int8 takes about 40%% less CPU per call "
                        "(docs/live.md measures both, lips and CPU)")
    p.add_argument("--encoder-every", type=int, default=d.encoder_every, choices=(1, 2),
                   help="frames per speech-encoder call: 2 halves the encoder's CPU and adds one frame (40 ms) of "
                        "audio delay; 1 for the lowest latency on a machine with headroom")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions,
                   help="presenter and WHIP sessions at once; more are refused with 503 + Retry-After")
    p.add_argument("--max-viewers", type=int, default=d.max_viewers, help="receive-only viewers at once")
    p.add_argument("--token", default=None,
                   help="bearer token for signalling and metrics (default: env PRESENTER_TOKEN); off loopback one "
                        "is generated and logged if neither is given")
    p.add_argument("--workers", type=int, default=d.workers, help="worker threads for motion and rendering")
    p.add_argument("--buffer-ms", type=float, default=None,
                   help="audio delay before playback, ms (default: the mouth driver's look-ahead and compute time "
                        "+ 80 ms for one frame, the render lead and jitter: 280 ms for the SyncFormer with the default "
                        "encoder, 240 ms with --encoder-every 1)")
    p.add_argument("--worker-id", default=d.worker_id,
                   help="behind a proxy (docs/deploy.md): session ids and WHIP Locations start with '<id>-' so "
                        "follow-up requests can be routed to this worker; empty = plain ids")


def config_from_args(args: argparse.Namespace) -> "ServerConfig":
    from presenter.server.config import ServerConfig
    from presenter.server.sdp import is_loopback_host

    token = args.token or os.environ.get("PRESENTER_TOKEN")
    if not token and not is_loopback_host(args.host):
        token = secrets.token_urlsafe(18)
        log.warning("no --token given for --host %s: generated one; open http://%s:%d/?token=%s",
                    args.host, args.host, args.port, token)
    cfg = ServerConfig(host=args.host, port=args.port, avatar=args.avatar, engine=args.engine, renderer=args.renderer,
                       encoder=args.encoder, encoder_every=args.encoder_every,
                       max_sessions=args.max_sessions, max_viewers=args.max_viewers, token=token,
                       workers=args.workers, worker_id=args.worker_id,
                       buffer_s=None if args.buffer_ms is None else args.buffer_ms / 1000.0)
    cfg.check()
    return cfg


def serve(cfg: "ServerConfig", *, on_startup=None, on_shutdown=None) -> None:
    """Run the server until Ctrl-C. on_startup / on_shutdown: extra aiohttp hooks (presenter live);
    on_startup runs after the app's own (the hub exists), on_shutdown before it."""
    from aiohttp import web

    from presenter.server.app import build_app

    app = build_app(cfg)
    if on_startup is not None:
        app.on_startup.append(on_startup)
    if on_shutdown is not None:
        app.on_shutdown.insert(0, on_shutdown)
    shown = "localhost" if cfg.loopback else cfg.host
    log.info("presenter page: http://%s:%d/   viewer (OBS Browser Source): http://%s:%d/viewer",
             shown, cfg.port, shown, cfg.port)
    web.run_app(app, host=cfg.host, port=cfg.port, print=None, access_log=None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m presenter.serve", description=__doc__, formatter_class=_Formatter)
    add_server_args(p)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    return run_command("presenter.serve", lambda: serve(config_from_args(args)), verbose=args.verbose,
                       fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
