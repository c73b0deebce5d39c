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

import numpy as np

from presenter.avatar.pack import AvatarPack, load_pack, read_speaking_style
from presenter.errors import UserError
from presenter.face.canonical import LIPS_OUTER
from presenter.motion.base import FPS, MouthDriver
from presenter.render.base import Renderer
from presenter.stream.frames import IdleFrames
from presenter.stream.stream import PresenterStream, StreamConfig

log = logging.getLogger(__name__)

FRAME_DELAY_S = 0.08   # one 40 ms frame + the 25 ms render lead + 15 ms of arrival jitter
# auto: the trained Style-SyncFormer whenever its weights are installed (they ship), else the
# loudness baseline with a logged reason.
ENGINES = ("auto", "syncformer", "baseline")
# auto: the trained generator whenever its weights are installed, else the baseline warp renderer.
RENDERERS = ("auto", "generator", "baseline")


@dataclass(frozen=True)
class Pipeline:
    pack: AvatarPack
    renderer: Renderer
    new_driver: Callable[[], MouthDriver]   # one driver per session (drivers keep state); has name, label,
                                            # lookahead_s, compute_s
    idle: IdleFrames
    engine: str                             # the engine actually chosen
    renderer_kind: str                      # the renderer actually chosen: "generator" or "baseline"
    driver_name: str                        # the mouth driver's name, for people
    labels: tuple[str, ...]                 # what the frames and the page say about the media
    mouth_box: tuple[int, int, int, int]    # (x0, y0, x1, y1) frame pixels holding the mouth in any pose

    @property
    def audio_delay_s(self) -> float:
        """The audio delay a live session needs: the driver's look-ahead and compute time, one frame,
        the render lead and ~15 ms of arrival jitter (0.1 s for the loudness baseline, 0.28 s for
        the SyncFormer with the default encoder, 0.24 s with encoder_every=1)."""
        return self.new_driver.lookahead_s + self.new_driver.compute_s + FRAME_DELAY_S

    def stream(self, pool: ThreadPoolExecutor, *, config: StreamConfig | None = None,
               on_stage: Callable[[str, float], None] | None = None) -> PresenterStream:
        """A new session stream; the default config holds audio for `audio_delay_s`."""
        config = StreamConfig(buffer_s=self.audio_delay_s) if config is None else config
        return PresenterStream(self.renderer, self.new_driver(), idle=self.idle, pool=pool, config=config,
                               on_stage=on_stage)


# The SyncFormer's speech encoder: int8 weights, one call per two frames. Picked by the CPU budget (a live
# session at most 60 % of a core): `presenter bench live --no-degrade`, 30 s of read speech, quiet machine:
# fp32/1 0.83, int8/1 0.73, fp32/2 0.63, int8/2 0.59 core. With the bilabial gate the lips lose nothing by
# it on held-out read speech (driver + renderer, offline: p/b/m 0.88 / 0.88, t/d/k/g 0.93 / 0.95, AUC
# 0.90 / 0.91 for fp32/1 / int8/2); the second frame per call costs 40 ms of audio delay.
DEFAULT_ENCODER, DEFAULT_ENCODER_EVERY = "int8", 2


def load_pipeline(avatar: str = "default", engine: str = "auto", renderer: str = "auto", *,
                  encoder: str = DEFAULT_ENCODER, encoder_every: int = DEFAULT_ENCODER_EVERY) -> Pipeline:
    """Avatar 'default' or a pack folder, an engine and a renderer name -> a ready pipeline (slow: ~1-6 s).
    encoder, encoder_every: the SyncFormer's speech encoder precision and frames per encoder call
    (`driver_factory`)."""
    if engine not in ENGINES:
        raise UserError(f"--engine {engine!r} is not known: choose one of {', '.join(ENGINES)}")
    if renderer not in RENDERERS:
        raise UserError(f"--renderer {renderer!r} is not known: choose one of {', '.join(RENDERERS)}")
    if avatar == "default":
        from presenter.avatar.create import default_pack

        pack = default_pack()
    else:
        pack = load_pack(Path(avatar).expanduser())
    if pack.fps != FPS:
        raise UserError(f"avatar pack {pack.root} runs at {pack.fps} fps; the live presenter needs {FPS} fps: "
                        "recreate it with 'presenter avatar create'")
    _one_thread_per_stage()
    kind, the_renderer = make_renderer(renderer, pack)
    chosen, new_driver = driver_factory(engine, style=read_speaking_style(pack), encoder=encoder,
                                        encoder_every=encoder_every)
    driver_name, driver_label = new_driver.name, new_driver.label
    labels = (the_renderer.synthetic_label, driver_label)
    idle = IdleFrames(the_renderer, pack.n_frames, labels)
    log.info("pipeline: avatar %s (%d idle frames), renderer %s, mouth %s",
             pack.root, pack.n_frames, the_renderer.name, driver_name)
    return Pipeline(pack, the_renderer, new_driver, idle, chosen, kind, driver_name, labels, mouth_box(pack))


def make_renderer(name: str, pack: AvatarPack) -> tuple[str, Renderer]:
    """(renderer chosen, the renderer) for --renderer name."""
    from presenter.render.generator import default_weights_dir, pack_weights_dir
    from presenter.render.warp_baseline import WarpBaselineRenderer

    if name == "baseline":
        return "baseline", WarpBaselineRenderer(pack)
    if pack_weights_dir(pack) is None and not (default_weights_dir() / "model.safetensors").is_file():
        if name == "auto":
            log.info("no generator weights in %s: faces are drawn by the baseline warp renderer",
                     default_weights_dir())
            return "baseline", WarpBaselineRenderer(pack)
        raise UserError(f"--renderer generator: no weights in {default_weights_dir()}; "
                        "train them with 'presenter train generator' or use --renderer baseline")
    from presenter.render.generator import GeneratorRenderer

    return "generator", GeneratorRenderer(pack)


def _one_thread_per_stage() -> None:
    """Stages run in the server's worker threads (one per core); a library that spawns its own
    intra-op threads on top oversubscribes the cores, the classic way to lose 2x here."""
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def driver_factory(engine: str, *, style: np.ndarray | None = None, encoder: str = DEFAULT_ENCODER,
                   encoder_every: int = DEFAULT_ENCODER_EVERY) -> tuple[str, Callable[[], MouthDriver]]:
    """(engine chosen, a factory of per-session drivers with .name and .label). style: a speaking
    style's mouth motion (T, V, 3) cm for the SyncFormer (the avatar's own, from its footage); None = the default.
    encoder: the speech encoder's precision, "fp32" or "int8"; encoder_every: frames per encoder call
    (1 or 2; 2 adds a frame of look-ahead). Both trade lip accuracy for CPU: docs/live.md measures them."""
    from presenter.engines.onnxruntime import ENCODER_PRECISIONS

    if encoder not in ENCODER_PRECISIONS:
        raise UserError(f"--encoder {encoder!r} is not known: choose one of {', '.join(ENCODER_PRECISIONS)}")
    if encoder_every not in (1, 2):
        raise UserError(f"--encoder-every must be 1 or 2, got {encoder_every}")
    from presenter.models.lipsync import default_weights_dir
    from presenter.motion.loudness import LoudnessDriver

    if engine == "baseline":
        return "baseline", LoudnessDriver
    if not (default_weights_dir() / "model.safetensors").is_file():
        if engine == "auto":
            log.warning("no SyncFormer weights in %s: the mouth follows the loudness baseline (no learning)",
                        default_weights_dir())
            return "baseline", LoudnessDriver
        raise UserError(f"--engine syncformer: no weights in {default_weights_dir()}; "
                        "train them with 'presenter train syncformer' or use --engine baseline")
    from presenter.engines.base import open_engine
    from presenter.engines.onnxruntime import whisper_encode
    from presenter.models.lipsync import load_lipsync
    from presenter.motion.labial import LabialGate, load_probe
    from presenter.motion.syncformer_driver import POSE_LEAD_FRAMES, SyncFormerDriver

    # Shared, read-only: one per process. The step engine is made from the shipped weights, as is model.
    model, encode = load_lipsync(), whisper_encode(1, encoder)
    step = open_engine("syncformer", "auto", threads=1)
    probe = load_probe()       # the bilabial gate's probe; each session's gate keeps its own state

    class _Factory:
        name, label, compute_s = SyncFormerDriver.name, SyncFormerDriver.label, SyncFormerDriver.compute_s
        lookahead_s = SyncFormerDriver.lookahead_for(model, encoder_every=encoder_every)

        def __call__(self) -> MouthDriver:
            return SyncFormerDriver(model, encode=encode, step=step, reference=style, encoder_every=encoder_every,
                                    labial=LabialGate(probe, lead=POSE_LEAD_FRAMES))

    return "syncformer", _Factory()


def mouth_box(pack: AvatarPack) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) frame pixels around the lips over the whole idle loop, with room below
    for the jaw to drop; for checks that look at the mouth (tests, the page's latency probe)."""
    lips = pack.face["verts_px"][:, list(LIPS_OUTER), :2]          # (N, 20, 2)
    (x0, y0), (x1, y1) = lips.min(axis=(0, 1)), lips.max(axis=(0, 1))
    h, w = pack.frames.shape[1:3]
    pad = 0.15 * (x1 - x0)
    return (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(w, int(x1 + pad) + 1),
            min(h, int(y1 + 0.8 * (y1 - y0) + pad) + 1))
