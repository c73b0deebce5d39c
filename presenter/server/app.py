"""The aiohttp application: pages, signalling, health and metrics.

Routes (all JSON unless said otherwise):

    GET    /                      presenter page          GET /viewer   viewer page (OBS Browser Source)
    GET    /web/<file>            page scripts and styles  GET /info     what the presenter is (labels, engine)
    POST   /offer                 {sdp, type} -> {sdp, type, session}: microphone in, presenter out
    POST   /view                  {sdp, type} -> {sdp, type, session}: receive-only, the program
    POST   /whip                  application/sdp -> 201, Location, answer SDP (RFC 9725 ingest)
    DELETE /whip/<id>, /session/<id>                 end a session
    PATCH  /whip/<id>             405 + Allow: DELETE (no trickle ICE or ICE restart; RFC 9725 allows this)
    GET    /session/<id>          the session's live numbers (fps, latency, reused frames, ...)
    POST   /session/<id>/interrupt                   barge-in: back to idle within one frame
    GET    /healthz               liveness and counts  GET /metrics  Prometheus text

Bound to loopback, media stays on 127.0.0.1 and no token is needed. Bound elsewhere, every
route except the pages, /info and /healthz needs `Authorization: Bearer <token>` (or
`?token=` for the pages' own requests).
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from aiohttp import web

from presenter import __version__
from presenter.errors import UserError
from presenter.server.config import ServerConfig
from presenter.server.metrics import Metrics
from presenter.server.sdp import MAX_SDP_BYTES, restrict_ice_to_loopback
from presenter.server.sessions import Hub, HubConfig
from presenter.stream.pipeline import Pipeline, load_pipeline

log = logging.getLogger(__name__)

MAX_BODY_BYTES = MAX_SDP_BYTES + 4096      # an offer plus its JSON wrapping
PUBLIC_PATHS = ("/", "/viewer", "/info", "/healthz")
WEB_SUFFIXES = (".html", ".js", ".css")

HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
STARTED = web.AppKey("started", float)


CONFIG = web.AppKey("config", ServerConfig)


def web_dir() -> Path:
    return Path(str(resources.files("presenter.web")))


def build_app(config: ServerConfig, *, pipeline: Pipeline | None = None) -> web.Application:
    """The app; the avatar pipeline is loaded at startup unless one is given (tests share one)."""
    config.check()
    metrics = Metrics()
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors(metrics), _auth(config, metrics)])
    app[CONFIG] = config
    app[METRICS] = metrics
    pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="presenter-work")

    async def startup(app: web.Application) -> None:
        if config.loopback:
            restrict_ice_to_loopback()
        pipe = pipeline
        if pipe is None:
            pipe = await asyncio.get_running_loop().run_in_executor(pool, functools.partial(
                load_pipeline, config.avatar, config.engine, config.renderer, encoder=config.encoder,
                encoder_every=config.encoder_every))
        app[HUB] = Hub(pipe, pool, metrics, HubConfig(
            max_sessions=config.max_sessions, max_viewers=config.max_viewers,
            connect_timeout_s=config.connect_timeout_s, reclaim_grace_s=config.reclaim_grace_s,
            loopback_only=config.loopback, buffer_s=config.buffer_s,
            id_prefix=f"{config.worker_id}-" if config.worker_id else ""))
        app[STARTED] = time.monotonic()

    async def shutdown(app: web.Application) -> None:
        if HUB in app:
            await app[HUB].close_all()

    async def cleanup(app: web.Application) -> None:
        pool.shutdown(wait=True, cancel_futures=True)

    app.on_startup.append(startup)
    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(cleanup)
    r = app.router
    r.add_get("/", _page("presenter.html"))
    r.add_get("/viewer", _page("viewer.html"))
    r.add_get("/web/{name}", _web_file)
    r.add_get("/info", _info)
    r.add_get("/healthz", _healthz)
    r.add_get("/metrics", _metrics)
    r.add_post("/offer", _json_offer("presenter"))
    r.add_post("/view", _json_offer("viewer"))
    r.add_post("/whip", _whip)
    r.add_delete("/whip/{id}", _delete)
    r.add_patch("/whip/{id}", _whip_patch)
    r.add_delete("/session/{id}", _delete)
    r.add_get("/session/{id}", _session_stats)
    r.add_post("/session/{id}/interrupt", _interrupt)
    return app


# --- middlewares -------------------------------------------------------------------------------

def _errors(metrics: Metrics):
    @web.middleware
    async def mw(request: web.Request, handler):
        try:
            return await handler(request)
        except UserError as e:
            metrics.rejected.labels("bad_request").inc()
            return web.json_response({"error": str(e)}, status=400)
        except web.HTTPRequestEntityTooLarge:
            metrics.rejected.labels("too_large").inc()
            return web.json_response({"error": f"request body too large; at most {MAX_BODY_BYTES} bytes"},
                                     status=413)
    return mw


def _auth(config: ServerConfig, metrics: Metrics):
    @web.middleware
    async def mw(request: web.Request, handler):
        if not config.token or request.path in PUBLIC_PATHS or request.path.startswith("/web/"):
            return await handler(request)
        given = request.query.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer "):]
        if not hmac.compare_digest(given.encode(), config.token.encode()):
            metrics.rejected.labels("unauthorized").inc()
            return web.json_response({"error": "missing or wrong token: send 'Authorization: Bearer <token>'"},
                                     status=401, headers={"WWW-Authenticate": 'Bearer realm="presenter"'})
        return await handler(request)
    return mw


# --- handlers ----------------------------------------------------------------------------------

def _page(name: str):
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(web_dir() / name, headers={"Cache-Control": "no-cache"})
    return handler


async def _web_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = web_dir() / name
    if "/" in name or not name.endswith(WEB_SUFFIXES) or not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def _info(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    p = hub.pipeline
    return web.json_response({
        "version": __version__, "engine": p.engine, "renderer": p.renderer.name,
        "renderer_kind": p.renderer_kind,
        "driver": p.driver_name, "labels": list(p.labels), "avatar": str(p.pack.root),
        "attribution": p.pack.manifest.get("attribution", ""), "buffer_s": hub.buffer_s,
        "frame_size": list(p.pack.frames.shape[1:3]), "mouth_box": list(p.mouth_box),
    })


async def _healthz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    return web.json_response({
        "status": "ok", "sessions": hub.count("presenter", "whip"), "viewers": hub.count("viewer"),
        "uptime_s": round(time.monotonic() - request.app[STARTED], 1), "worker_id": request.app[CONFIG].worker_id,
    })


async def _metrics(request: web.Request) -> web.Response:
    hub, metrics = request.app[HUB], request.app[METRICS]
    rates = [s.video_out.fps() for s in hub.sessions.values() if s.video_out is not None and s.connected.is_set()]
    metrics.fps.set(min(rates) if rates else 0.0)
    return web.Response(body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def _read_json_offer(request: web.Request) -> tuple[object, object]:
    body = await request.read()
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"body is not JSON ({e}); send {{\"sdp\": ..., \"type\": \"offer\"}}") from None
    if not isinstance(data, dict):
        raise UserError("body must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    return data.get("sdp"), data.get("type")


def _json_offer(kind: str):
    async def handler(request: web.Request) -> web.Response:
        sdp, sdp_type = await _read_json_offer(request)
        session, answer = await request.app[HUB].start(kind, sdp, sdp_type)
        return web.json_response({"sdp": answer, "type": "answer", "session": session.id})
    return handler


async def _whip(request: web.Request) -> web.Response:
    if request.content_type != "application/sdp":
        raise web.HTTPUnsupportedMediaType(text="WHIP offers must be sent as Content-Type: application/sdp\n")
    body = await request.read()
    try:
        sdp = body.decode()
    except UnicodeDecodeError:
        raise UserError("the SDP offer is not UTF-8 text") from None
    session, answer = await request.app[HUB].start("whip", sdp)
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": f"/whip/{session.id}"})


def _find(request: web.Request):
    session = request.app[HUB].sessions.get(request.match_info["id"])
    if session is None:
        raise web.HTTPNotFound(text="no such session (it may have ended already)\n")
    return session


async def _delete(request: web.Request) -> web.Response:
    session = _find(request)
    await request.app[HUB].end(session, "deleted")
    return web.Response(status=200)


async def _whip_patch(request: web.Request) -> web.Response:
    """Trickle ICE and ICE restarts (RFC 9725 section 4.3) are not supported: the answer carries every
    candidate at once. A server without them answers PATCH with 405 and the methods it allows."""
    _find(request)
    return web.Response(status=405, headers={"Allow": "DELETE"},
                        text="this WHIP server supports neither trickle ICE nor ICE restarts: all candidates "
                             "are in the SDP answer; end the session with DELETE\n")


async def _session_stats(request: web.Request) -> web.Response:
    return web.json_response(_find(request).stats())


async def _interrupt(request: web.Request) -> web.Response:
    session = _find(request)
    if session.stream is None:
        raise UserError(f"session {session.id} is a {session.kind} session: it has no speech to interrupt")
    session.stream.interrupt()
    return web.json_response({"interrupted": session.id})
