"""`presenter live`: the server, plus the local microphone as a source and a virtual camera as an output.

    presenter live --mic                     # speak into this machine's microphone; watch /viewer
    presenter live --mic --virtual-camera    # ... and feed a v4l2loopback camera (video only)

The microphone's presenter goes on air in the program (what /viewer and OBS show); a page
session or WHIP publisher started later takes over until it ends.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
from aiohttp import web

from presenter.errors import UserError
from presenter.server.app import HUB
from presenter.server.sessions import Hub

log = logging.getLogger(__name__)

MIC_RATE = 48000
MIC_BLOCK = 960              # 20 ms per callback, like WebRTC
LOCAL = web.AppKey("local", list)


def _sounddevice():
    try:
        import sounddevice
    except OSError as e:     # the PortAudio library itself is missing
        raise UserError(f"cannot load PortAudio for the microphone ({e}); install libportaudio2") from None
    return sounddevice


def check_microphone(device: str | int | None) -> str:
    """The input device's name; a UserError that says so when there is none."""
    sd = _sounddevice()
    try:
        info = sd.query_devices(device, kind="input")
    except (sd.PortAudioError, ValueError) as e:
        raise UserError(f"no microphone found ({e}). Plug one in, pick one with --mic-device (see "
                        "'python -m sounddevice'), or use the presenter page in a browser instead") from None
    return str(info["name"])


class LocalMicrophone:
    """The local microphone (sounddevice, PortAudio) feeding a presenter stream on the program."""

    def __init__(self, hub: Hub, device: str | int | None = None) -> None:
        self.hub = hub
        self.device = device
        self.stream = hub.new_stream()
        self._input = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        sd = _sounddevice()
        loop = asyncio.get_running_loop()

        def callback(indata: np.ndarray, frames: int, time_info, status) -> None:   # PortAudio's thread
            loop.call_soon_threadsafe(self.stream.push_audio, indata.copy(), MIC_RATE)

        try:
            self._input = sd.InputStream(samplerate=MIC_RATE, channels=1, dtype="int16", blocksize=MIC_BLOCK,
                                         device=self.device, callback=callback)
            self._input.start()
        except sd.PortAudioError as e:
            raise UserError(f"the microphone could not be opened ({e})") from None
        self.hub.metrics.sessions.labels("local").inc()
        self.hub.program.add_source(self)
        self._task = loop.create_task(self._pump(), name="local microphone")
        log.info("local microphone on air: %s", check_microphone(self.device))

    async def _pump(self) -> None:
        async for chunk in self.stream:
            self.hub.metrics.observe_chunk(chunk)
            self.hub.program.publish(self, chunk)

    async def close(self) -> None:
        if self._input is not None:
            self._input.stop()
            self._input.close()
            self._input = None
            self.hub.metrics.sessions.labels("local").dec()
        self.hub.program.remove_source(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.stream.close()


class VirtualCamera:
    """The program's video on a v4l2loopback camera (pyvirtualcam); frames are dropped, not queued,
    when the camera is slower than 25 fps."""

    def __init__(self, hub: Hub) -> None:
        h, w = hub.pipeline.pack.frames.shape[1:3]
        self.hub = hub
        self.cam = open_virtual_camera(w & ~1, h & ~1)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="virtual-camera")
        self._busy = False

    def start(self) -> None:
        self.hub.program.subscribe(self, self._on_frame)
        log.info("virtual camera: %s", self.cam.device)

    def _on_frame(self, video: av.VideoFrame, audio: av.AudioFrame) -> None:
        if self._busy:
            return
        self._busy = True
        fut = self._writer.submit(self._send, video)
        fut.add_done_callback(lambda f: setattr(self, "_busy", False))

    def _send(self, video: av.VideoFrame) -> None:
        self.cam.send(video.to_ndarray(format="rgb24"))

    async def close(self) -> None:
        self.hub.program.unsubscribe(self)
        self._writer.shutdown(wait=True)
        self.cam.close()


def open_virtual_camera(width: int, height: int):
    import pyvirtualcam

    try:
        return pyvirtualcam.Camera(width, height, fps=25, fmt=pyvirtualcam.PixelFormat.RGB)
    except RuntimeError as e:
        raise UserError(f"no virtual camera ({e}). Load v4l2loopback first (Debian: apt install "
                        "v4l2loopback-dkms; sudo modprobe v4l2loopback exclusive_caps=1), or use the /viewer "
                        "page as an OBS Browser Source") from None


def run_live(args: argparse.Namespace) -> None:
    """`presenter live`: checks the devices first, then serves until Ctrl-C."""
    from presenter.serve import config_from_args, serve

    cfg = config_from_args(args)
    device = args.mic_device
    if device is not None and device.isdigit():
        device = int(device)
    if args.mic:
        check_microphone(device)
    if args.virtual_camera:
        try:
            import pyvirtualcam  # noqa: F401  (fail before the avatar loads)
        except ImportError:
            raise UserError("--virtual-camera needs pyvirtualcam: pip install 'presenter[serve]'") from None

    async def start_local(app: web.Application) -> None:
        hub = app[HUB]
        app[LOCAL] = parts = []
        if args.virtual_camera:
            cam = VirtualCamera(hub)
            cam.start()
            parts.append(cam)
        if args.mic:
            mic = LocalMicrophone(hub, device)
            await mic.start()
            parts.append(mic)

    async def stop_local(app: web.Application) -> None:
        for part in reversed(app.get(LOCAL, [])):
            await part.close()

    serve(cfg, on_startup=start_local, on_shutdown=stop_local)
