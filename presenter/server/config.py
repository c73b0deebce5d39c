"""The server's options, importable without the server's dependencies (for `presenter --help`)."""
from __future__ import annotations

import re
from dataclasses import dataclass

from presenter.errors import UserError

WORKER_ID = r"[a-z0-9]{1,16}"       # a worker's id in session ids and proxy routes


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"         # bind address; anything but loopback needs a token
    port: int = 8080
    avatar: str = "default"         # 'default' or an avatar pack folder
    engine: str = "auto"            # speech-to-mouth: auto (SyncFormer when installed), syncformer, baseline
    renderer: str = "auto"          # face: auto (generator when installed), generator, baseline
    encoder: str = "int8"           # the SyncFormer's speech encoder: int8 or fp32 (pipeline.DEFAULT_ENCODER)
    encoder_every: int = 2          # frames per speech-encoder call: 2 or 1 (1: 40 ms less delay, more CPU)
    max_sessions: int = 4           # presenter + WHIP sessions at once
    max_viewers: int = 16
    token: str | None = None        # required off loopback
    connect_timeout_s: float = 15.0  # a peer not connected by then is closed
    reclaim_grace_s: float = 2.0    # at a limit, a peer not connected after this long gives its place up
    workers: int = 2                # worker threads for motion and rendering (<= cores)
    buffer_s: float | None = None   # audio delay before playback (None: from the driver's look-ahead)
    worker_id: str = ""             # behind a proxy: session ids start with "<worker_id>-" (docs/deploy.md)

    @property
    def loopback(self) -> bool:
        from presenter.server.sdp import is_loopback_host   # needs aiortc: the server runs, so it is there

        return is_loopback_host(self.host)

    def check(self) -> None:
        if not self.loopback and not self.token:
            raise UserError(f"--host {self.host} is not loopback: give --token (or PRESENTER_TOKEN) so "
                            "strangers cannot start sessions")
        if self.max_sessions < 1 or self.max_viewers < 0:
            raise UserError("--max-sessions must be >= 1 and --max-viewers >= 0")
        if not 1 <= self.workers <= 64:
            raise UserError(f"--workers {self.workers}: use 1..64")
        if self.worker_id and not re.fullmatch(WORKER_ID, self.worker_id):
            raise UserError(f"--worker-id {self.worker_id!r}: use 1-16 lower-case letters and digits, e.g. w1")
