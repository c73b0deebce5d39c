"""Two `presenter.serve` workers behind nginx, routed by session, with real WebRTC calls through it.

Everything on 127.0.0.1: two worker processes (`--worker-id w1`, `w2`, one session each, the
cheap loudness driver and warp renderer), nginx unprivileged in a temporary prefix with the
config from `presenter.server.nginx`, and our aiortc client. Signalling goes through nginx; the
media goes straight to the worker's loopback candidates.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
import pytest

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/setup.sh installs "
                                                      "Debian's nginx-light)")
START_S = 60.0        # hang guards: a busy 2-core machine gets this long; nothing asserts speed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Wait for condition() (which may be a coroutine function) to hold, checking every 50 ms."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        ok = condition()
        if asyncio.iscoroutine(ok):
            ok = await ok
        if ok:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        await asyncio.sleep(0.05)


async def request(method: str, url: str, **kw) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as r:
        return r.status, dict(r.headers), await r.text()


async def metrics(url: str) -> dict[str, float]:
    """/metrics samples as {'name{label="v"}': value}."""
    from prometheus_client.parser import text_string_to_metric_families

    _, _, text = await request("GET", f"{url}/metrics")
    return {s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}" if s.labels else ""):
            s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


@dataclass(frozen=True)
class Deployment:
    url: str                       # nginx
    workers: dict[str, str]        # worker id -> its own URL


@pytest.fixture(scope="module")
def deployment(baseline_pipeline, live_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two workers and nginx; the default avatar already exists in live_home (baseline_pipeline made it)."""
    from presenter.server.nginx import Worker, render_config, write_config

    prefix = tmp_path_factory.mktemp("nginx")
    ports = {"w1": free_port(), "w2": free_port()}
    env = {**os.environ, "PRESENTER_HOME": str(live_home)}
    procs: list[subprocess.Popen] = []
    try:
        for wid, port in ports.items():
            log = open(prefix / f"{wid}.log", "w")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "presenter.serve", "--host", "127.0.0.1", "--port", str(port),
                 "--worker-id", wid, "--engine", "baseline", "--renderer", "baseline", "--max-sessions", "1",
                 "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        listen = f"127.0.0.1:{free_port()}"
        conf = write_config(prefix / "nginx.conf", render_config(
            [Worker(wid, f"127.0.0.1:{port}") for wid, port in ports.items()], listen=listen, prefix=prefix,
            daemon=False), prefix)
        procs.append(subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        dep = Deployment(f"http://{listen}", {wid: f"http://127.0.0.1:{port}" for wid, port in ports.items()})

        async def ready() -> bool:
            for wid in ports:
                try:
                    status, _, _ = await request("GET", f"{dep.url}/worker/{wid}/healthz")
                except aiohttp.ClientError:
                    return False
                if status != 200:
                    return False
            return True

        for p in procs:
            assert p.poll() is None, f"{p.args[:3]} exited: see {prefix}"
        asyncio.run(until(ready, START_S, f"two workers healthy through nginx (logs in {prefix})"))
        yield dep
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def worker_of(session_id: str) -> str:
    m = re.fullmatch(r"(w[12])-[0-9a-f]{32}", session_id)
    assert m, f"session id {session_id!r} does not name its worker"
    return m.group(1)


def test_sessions_through_nginx_land_on_both_workers_and_follow_ups_reach_theirs(deployment: Deployment,
                                                                              speech_wav) -> None:
    """Through nginx: a presenter call (POST /offer) and a WHIP publisher land on different workers; the
    call's frames come back over loopback media; GET and DELETE /session/<id>, PATCH and DELETE
    /whip/<id> reach the session's own worker; with both workers full an offer gets 503; with one
    freed, an offer that round robin hands to the full worker is passed on to the free one."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from presenter.server.client import Client, WavMicrophone
    from presenter.server.sdp import restrict_ice_to_loopback

    dep = deployment
    busy = 'presenter_requests_rejected_total{reason="busy"}'

    async def main() -> dict:
        restrict_ice_to_loopback()          # our clients, like the workers, use 127.0.0.1 only
        out: dict = {}
        pub = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        async with Client(dep.url, WavMicrophone(speech_wav.samples, speech_wav.rate)) as call:
            await call.wait_connected(START_S)
            out["pair"] = call.selected_pair()
            out["call"] = worker_of(call.session_id)

            pub.addTransceiver(WavMicrophone(speech_wav.samples, speech_wav.rate), direction="sendonly")
            await pub.setLocalDescription(await pub.createOffer())
            status, headers, answer = await request("POST", f"{dep.url}/whip", data=pub.localDescription.sdp,
                                                    headers={"Content-Type": "application/sdp"})
            assert status == 201, answer
            location = out["location"] = headers["Location"]
            out["whip"] = worker_of(location.removeprefix("/whip/"))
            await pub.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

            await until(lambda: len(call.received.video_t) >= 25, START_S, "25 frames of the call")
            out["stats"] = await request("GET", f"{dep.url}/session/{call.session_id}")
            out["patch"] = await request("PATCH", f"{dep.url}{location}")
            out["health"] = {wid: (await request("GET", f"{dep.url}/worker/{wid}/healthz"))[2] for wid in dep.workers}

            full = Client(dep.url, WavMicrophone(np.zeros(4800, np.float32), 48000))
            try:                            # both workers at their limit of one session
                await full.connect()
                out["full"] = "connected"
            except aiohttp.ClientResponseError as e:     # a 503 is text, not JSON
                out["full"] = f"{e.status} {e.headers.get('Retry-After') if e.headers else None}"
            finally:
                await full.close()

            out["delete_call"] = (await request("DELETE", f"{dep.url}/session/{call.session_id}"))[0]
        busy_before = (await metrics(dep.workers[out["whip"]])).get(busy, 0.0)
        async with Client(dep.url, WavMicrophone(speech_wav.samples, speech_wav.rate)) as spill:
            await spill.wait_connected(START_S)
            await until(lambda: len(spill.received.video_t) >= 5, START_S, "frames of the passed-on call")
            out["spill"] = worker_of(spill.session_id)
            out["busy"] = (await metrics(dep.workers[out["whip"]])).get(busy, 0.0) - busy_before
        out["delete_whip"] = (await request("DELETE", f"{dep.url}{location}"))[0]
        out["delete_whip_again"] = (await request("DELETE", f"{dep.url}{location}"))[0]
        await pub.close()
        out["unknown"] = (await request("DELETE", f"{dep.url}/session/w9-{'0' * 32}"))[0]
        return out

    out = asyncio.run(main())
    assert out["pair"] == ("127.0.0.1", "127.0.0.1")                  # media straight to the worker, loopback
    assert {out["call"], out["whip"]} == {"w1", "w2"}                 # round robin over the two workers
    status, _, stats = out["stats"]
    assert status == 200 and '"kind": "presenter"' in stats           # found: it reached the call's worker
    status, headers, _ = out["patch"]
    assert status == 405 and headers["Allow"] == "DELETE"             # found on its worker (elsewhere: 404)
    for wid, body in out["health"].items():
        assert f'"worker_id": "{wid}"' in body and '"sessions": 1' in body
    assert out["full"] == "503 10"                                   # refused, with Retry-After
    assert out["delete_call"] == 200
    assert out["spill"] == out["call"]      # the freed worker took the next call ...
    assert out["busy"] == 1                 # ... after round robin's pick, the full worker, refused it
    assert (out["delete_whip"], out["delete_whip_again"]) == (200, 404)
    assert out["unknown"] == 404            # an id naming no worker reaches none


@pytest.mark.parametrize("balance", ["round_robin", "least_conn"])
def test_generated_config_passes_nginx_check(tmp_path: Path, balance: str) -> None:
    """`nginx -t` accepts the generated config for three workers under either balance policy, and the
    generator refuses duplicate worker ids and malformed --worker specs."""
    from presenter.errors import UserError
    from presenter.server.nginx import parse_worker, render_config, write_config

    workers = [parse_worker(f"w{i}=127.0.0.1:{9000 + i}") for i in range(3)]
    conf = write_config(tmp_path / "nginx.conf", render_config(workers, listen=f"127.0.0.1:{free_port()}",
                                                               prefix=tmp_path, balance=balance), tmp_path)
    check = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf), "-e", str(tmp_path / "error.log")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with pytest.raises(UserError, match="must differ"):
        render_config(workers + workers[:1], prefix=tmp_path)
    for bad in ("W1=127.0.0.1:9001", "w1:9001", "w1=127.0.0.1", "w1=host;evil:80"):
        with pytest.raises(UserError, match="--worker"):
            parse_worker(bad)
