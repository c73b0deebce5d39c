"""nginx in front of several `presenter.serve` workers, routing by session (docs/deploy.md).

Each worker runs with `--worker-id <id>`, so its session ids (the JSON `session` of /offer and
/view, and the WHIP `Location: /whip/<id>`) start with "<id>-". nginx then needs no state:

    POST /offer, /view, /whip, pages, /info   -> any worker (round robin or least_conn); a worker at
                                                  its session limit answers 503 and nginx tries the next
    /session/<wid>-..., /whip/<wid>-...        -> worker <wid> only (stats, interrupt, DELETE, PATCH)
    /worker/<wid>/<path>                       -> <path> on worker <wid> (its /healthz, /metrics)

Only signalling goes through nginx: each worker's SDP answer carries its own ICE candidates, so
media flows between the browser and the worker directly (workers need reachable addresses).

Examples:
  python -m presenter.server.nginx --worker w1=127.0.0.1:9001 --worker w2=127.0.0.1:9002 \\
      --listen 127.0.0.1:8080 --prefix /tmp/presenter-nginx -o /tmp/presenter-nginx/nginx.conf
  nginx -p /tmp/presenter-nginx -c /tmp/presenter-nginx/nginx.conf -e /tmp/presenter-nginx/error.log
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from presenter.errors import UserError, run_command
from presenter.server.config import WORKER_ID

BALANCES = ("round_robin", "least_conn")
MAX_BODY = "256k"          # above the worker's own limit (an SDP offer + JSON); the worker answers 413 itself
SIGNAL_TIMEOUT_S = 60      # an offer's answer waits for the worker's ICE gathering
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")   # Debian's defaults are root-owned


@dataclass(frozen=True)
class Worker:
    id: str          # its --worker-id
    address: str     # host:port of its HTTP server


def parse_worker(spec: str) -> Worker:
    """'w1=127.0.0.1:9001' -> Worker('w1', '127.0.0.1:9001')."""
    wid, sep, address = spec.partition("=")
    if not sep or not re.fullmatch(WORKER_ID, wid) or not re.fullmatch(r"[^\s;{}]+:\d{1,5}", address):
        raise UserError(f"--worker {spec!r}: write ID=HOST:PORT with ID of 1-16 lower-case letters and digits, "
                        "e.g. w1=127.0.0.1:9001")
    return Worker(wid, address)


def render_config(workers: Sequence[Worker], *, listen: str = "127.0.0.1:8080", prefix: Path,
                  balance: str = "round_robin", daemon: bool = True) -> str:
    """The text of an nginx.conf that routes to `workers`; pid, logs and temp files under `prefix`."""
    if not workers:
        raise UserError("give at least one --worker")
    ids = [w.id for w in workers]
    if len(set(ids)) != len(ids):
        raise UserError(f"worker ids must differ: {', '.join(ids)}")
    if balance not in BALANCES:
        raise UserError(f"--balance {balance!r}: choose one of {', '.join(BALANCES)}")
    prefix = Path(prefix).resolve()
    # max_fails=0: a full worker's 503 must not mark it down for the others' sessions; a dead one
    # costs one refused connect per offer (a readiness probe takes it out of the list, docs/deploy.md).
    any_servers = "".join(f"        server {w.address} max_fails=0;\n" for w in workers)
    one_upstreams = "".join(f"    upstream presenter_{w.id} {{\n        server {w.address};\n    }}\n" for w in workers)
    routes = "".join(f"        ~^/(?:session|whip|worker)/{w.id}[-/] presenter_{w.id};\n" for w in workers)
    temp = "".join(f"    {d}_temp_path {prefix / d};\n" for d in TEMP_DIRS)
    return f"""# presenter: {len(workers)} workers behind nginx, routed by session (presenter/server/nginx.py)
daemon {"on" if daemon else "off"};
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log {prefix / "access.log"};
{temp}    client_max_body_size {MAX_BODY};
    client_body_buffer_size {MAX_BODY};     # offers stay in memory
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_read_timeout {SIGNAL_TIMEOUT_S}s;
    proxy_redirect off;                     # Locations are relative paths already

    upstream presenter_any {{
{"        least_conn;" + chr(10) if balance == "least_conn" else ""}{any_servers}    }}
{one_upstreams}
    # the worker a session lives on, from the "<worker id>-" prefix of its id
    map $uri $presenter_worker {{
{routes}        default "";
    }}

    server {{
        listen {listen};

        # a session's follow-ups: its own worker only
        location ~ ^/(?:session|whip)/[^/]+ {{
            if ($presenter_worker = "") {{
                return 404 "no such session (its id names no worker)\\n";
            }}
            proxy_pass http://$presenter_worker;
        }}

        # one worker's own routes (health, metrics): /worker/<id>/healthz -> /healthz on <id>
        location ~ ^/worker/[a-z0-9]+/(?<presenter_path>.*)$ {{
            if ($presenter_worker = "") {{
                return 404 "no such worker\\n";
            }}
            proxy_pass http://$presenter_worker/$presenter_path$is_args$args;
        }}

        # new sessions and everything else: any worker; one at its limit (503) passes the offer on
        location / {{
            proxy_next_upstream error http_503 non_idempotent;
            proxy_pass http://presenter_any;
        }}
    }}
}}
"""


def write_config(path: Path, text: str, prefix: Path) -> Path:
    """Write the config (temp file, then rename) and make the prefix's temp folders."""
    prefix = Path(prefix)
    for d in TEMP_DIRS:
        (prefix / d).mkdir(parents=True, exist_ok=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m presenter.server.nginx", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", action="append", required=True, metavar="ID=HOST:PORT",
                   help="a presenter.serve worker started with --worker-id ID (repeat for each)")
    p.add_argument("--listen", default="127.0.0.1:8080", help="nginx's address (default: %(default)s)")
    p.add_argument("--prefix", type=Path, required=True, help="folder for nginx's pid, logs and temp files")
    p.add_argument("--balance", default="round_robin", choices=BALANCES,
                   help="how new sessions pick a worker (default: %(default)s)")
    p.add_argument("--foreground", action="store_true", help="'daemon off': nginx stays in the foreground "
                   "(containers, supervisors, tests)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the nginx.conf to write")

    args = p.parse_args(argv)

    def run() -> None:
        text = render_config([parse_worker(s) for s in args.worker], listen=args.listen, prefix=args.prefix,
                             balance=args.balance, daemon=not args.foreground)
        write_config(args.output, text, args.prefix)

    return run_command("presenter.server.nginx", run, verbose=False, fmt="%(message)s")


if __name__ == "__main__":
    sys.exit(main())
