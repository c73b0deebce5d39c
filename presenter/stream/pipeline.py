"""What a live session is made of: the avatar, its renderer and a mouth-driver factory.

`load_pipeline` is the one place that picks the parts by name; the trained SyncFormer and
generator will register here as new engines beside the no-learning baseline.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from presenter.avatar.pack import AvatarPack, load_pack
from presenter.errors import UserError
from presenter.face.canonical import LIPS_OUTER
from presenter.motion.base import FPS, MouthDriver
from presenter.render.base import Renderer
from presenter.stream.frames import IdleFrames
from presenter.stream.stream import PresenterStream, StreamConfig

log = logging.getLogger(__name__)

ENGINES = ("auto", "baseline")   # auto: the best engine available here (today: baseline)


@dataclass(frozen=True)
class Pipeline:
    pack: AvatarPack
    renderer: Renderer
    new_driver: Callable[[], MouthDriver]   # one driver per session: drivers keep state
    idle: IdleFrames
    engine: str                             # the engine actually chosen
    driver_name: str                        # the mouth driver's name, for people
    labels: tuple[str, ...]                 # what the frames and the page say about the media
    mouth_box: tuple[int, int, int, int]    # (x0, y0, x1, y1) frame pixels holding the mouth in any pose

    def stream(self, pool: ThreadPoolExecutor, *, config: StreamConfig = StreamConfig(),
               on_stage: Callable[[str, float], None] | None = None) -> PresenterStream:
        return PresenterStream(self.renderer, self.new_driver(), idle=self.idle, pool=pool, config=config,
                               on_stage=on_stage)


def load_pipeline(avatar: str = "default", engine: str = "auto") -> Pipeline:
    """Avatar 'default' or a pack folder, and an engine name -> a ready pipeline (slow: ~1-6 s)."""
    if engine not in ENGINES:
        raise UserError(f"--engine {engine!r} is not known: choose one of {', '.join(ENGINES)}")
    if avatar == "default":
        from presenter.avatar.create import default_pack

        pack = default_pack()
    else:
        pack = load_pack(Path(avatar).expanduser())
    if pack.fps != FPS:
        raise UserError(f"avatar pack {pack.root} runs at {pack.fps} fps; the live presenter needs {FPS} fps: "
                        "recreate it with 'presenter avatar create'")
    from presenter.motion.loudness import LoudnessDriver
    from presenter.render.warp_baseline import WarpBaselineRenderer

    renderer = WarpBaselineRenderer(pack)
    driver_name, driver_label = LoudnessDriver.name, LoudnessDriver.label
    labels = (renderer.synthetic_label, driver_label)
    idle = IdleFrames(renderer, pack.n_frames, labels)
    log.info("pipeline: avatar %s (%d idle frames), renderer %s, mouth %s",
             pack.root, pack.n_frames, renderer.name, driver_name)
    return Pipeline(pack, renderer, LoudnessDriver, idle, "baseline", driver_name, labels, mouth_box(pack))


def mouth_box(pack: AvatarPack) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) frame pixels around the lips over the whole idle loop, with room below
    for the jaw to drop; for checks that look at the mouth (tests, the page's latency probe)."""
    lips = pack.face["verts_px"][:, list(LIPS_OUTER), :2]          # (N, 20, 2)
    (x0, y0), (x1, y1) = lips.min(axis=(0, 1)), lips.max(axis=(0, 1))
    h, w = pack.frames.shape[1:3]
    pad = 0.15 * (x1 - x0)
    return (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(w, int(x1 + pad) + 1),
            min(h, int(y1 + 0.8 * (y1 - y0) + pad) + 1))
