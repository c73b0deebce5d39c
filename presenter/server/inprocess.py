"""The server app running inside this process on 127.0.0.1, for tests and measurements that talk
to it over real WebRTC (our aiortc client) while sharing one already-loaded pipeline.

    async with serving(pipeline, max_sessions=2) as srv:
        async with Client(srv.url, WavMicrophone(samples, rate)) as c:
            ...
        counters = await srv.metrics()
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from presenter.server.app import build_app
from presenter.server.config import ServerConfig
from presenter.stream.pipeline import Pipeline


@dataclass
class Running:
    url: str                  # http://127.0.0.1:<port>
    app: web.Application

    async def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as {'name{label="v"}': value}."""
        from prometheus_client.parser import text_string_to_metric_families

        async with aiohttp.ClientSession() as http, http.get(f"{self.url}/metrics") as r:
            text = await r.text()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


@contextlib.asynccontextmanager
async def serving(pipeline: Pipeline | None, **config) -> AsyncIterator[Running]:
    """The app on 127.0.0.1 at a free port (config: ServerConfig fields), torn down on exit
    (shutdown closes all sessions). pipeline None: the app loads config's avatar and engine."""
    app = build_app(ServerConfig(**config), pipeline=pipeline)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield Running(f"http://127.0.0.1:{port}", app)
    finally:
        await runner.cleanup()
