"""The program: what viewers (OBS, the viewer page, a virtual camera) see and hear.

On air is the newest live source (a presenter-page session, a WHIP publisher, the local
microphone); when it leaves, the one before it; with none, an idle presenter that the program
runs itself while anyone watches. The program numbers its own frames, so viewers see one
continuous stream (pts keep rising) across source changes.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable

import av

from presenter.stream.frames import restamp_audio, video_frame
from presenter.stream.stream import FPS, PresenterStream, StreamChunk

log = logging.getLogger(__name__)

Subscriber = Callable[[av.VideoFrame, av.AudioFrame], None]


class Program:
    def __init__(self, make_idle_stream: Callable[[], PresenterStream],
                 on_chunk: Callable[[StreamChunk], None] | None = None) -> None:
        """make_idle_stream: a new stream with no input (the idle presenter);
        on_chunk: observes each chunk of that idle stream (metrics)."""
        self._make_idle_stream = make_idle_stream
        self._on_chunk = on_chunk or (lambda chunk: None)
        self._sources: list[Hashable] = []           # newest last: the one on air
        self._subscribers: dict[Hashable, Subscriber] = {}
        self._n = 0
        self._idle: PresenterStream | None = None
        self._idle_task: asyncio.Task | None = None

    @property
    def on_air(self) -> Hashable | None:
        return self._sources[-1] if self._sources else None

    @property
    def n_subscribers(self) -> int:
        return len(self._subscribers)

    def add_source(self, key: Hashable) -> None:
        self._sources.append(key)
        self._update_idle()

    def remove_source(self, key: Hashable) -> None:
        if key in self._sources:
            self._sources.remove(key)
            self._update_idle()

    def subscribe(self, key: Hashable, subscriber: Subscriber) -> None:
        self._subscribers[key] = subscriber
        self._update_idle()

    def unsubscribe(self, key: Hashable) -> None:
        if self._subscribers.pop(key, None) is not None:
            self._update_idle()

    def publish(self, key: Hashable, chunk: StreamChunk) -> None:
        """A source's chunk: sent on to every subscriber if that source is on air."""
        if key is self.on_air or (key is self._idle and self.on_air is None):
            self._emit(chunk)

    def _emit(self, chunk: StreamChunk) -> None:
        if not self._subscribers:
            return
        n, self._n = self._n, self._n + 1
        video = video_frame(chunk.video.to_ndarray(), n, FPS)
        audio = restamp_audio(chunk.audio, n)
        for subscriber in list(self._subscribers.values()):
            subscriber(video, audio)

    def _update_idle(self) -> None:
        need = bool(self._subscribers) and not self._sources
        if need and self._idle_task is None:
            self._idle = self._make_idle_stream()
            self._idle_task = asyncio.get_running_loop().create_task(self._run_idle(self._idle), name="program-idle")
        elif not need and self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None
            self._idle = None

    async def _run_idle(self, stream: PresenterStream) -> None:
        try:
            async for chunk in stream:
                self._on_chunk(chunk)
                self.publish(stream, chunk)
        finally:
            await stream.close()

    async def close(self) -> None:
        self._subscribers.clear()
        self._sources.clear()
        task, self._idle_task = self._idle_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
