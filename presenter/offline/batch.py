"""`presenter lipsync --batch JOBS.csv -o OUT_DIR`: many dubbing jobs, resumable, one table at the end.

JOBS.csv has a header row; columns (relative paths are taken from the CSV's folder):
    face     video or image to dub (required)
    audio    speech (this or driver)
    driver   talking-face video to follow instead of speech
    style    optional reference clip for the speaking style
    output   optional file name in OUT_DIR (default: <row>-<face stem>-<audio or driver stem>.mp4)

A row whose output exists is skipped: outputs are written atomically, so an existing one is complete and
an interrupted batch resumes where it stopped. A row that fails (bad file, no face...) is reported and
the others go on. With workers > 1 rows run in a process pool (each job already keeps two cores busy:
one worker per two cores, `default_workers`, is the sensible size). With a Ray address rows run as Ray
tasks (`run_on_ray`), each the same `run_row` and asking for two CPUs; their inputs and OUT_DIR must be
paths every worker sees.
"""
from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import socket
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from presenter.errors import UserError

log = logging.getLogger(__name__)

COLUMNS = ("face", "audio", "driver", "style", "output")
CPUS_PER_JOB = 2                    # a job keeps about two cores busy: the pool size and a Ray task's request
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # rows pass paths and outcomes, not frames: a small store will do


@dataclass(frozen=True)
class Row:
    number: int                     # 1 = the first row after the header
    face: Path
    audio: Path | None
    driver: Path | None
    style: Path | None
    output: Path


@dataclass(frozen=True)
class Outcome:
    row: Row
    status: str                     # "done", "skipped" (output already there) or "failed"
    message: str                    # the error for a failed row
    seconds: float                  # wall time of the row
    video_s: float = 0.0            # seconds of video written


def read_jobs(jobs: Path, out_dir: Path) -> list[Row]:
    """The rows of a jobs CSV; UserError for a missing file, unknown columns or a row without a face."""
    if not jobs.is_file():
        raise UserError(f"--batch {jobs} does not exist")
    try:
        with jobs.open(newline="") as f:
            table = list(csv.DictReader(f))
            header = [c.strip() for c in (table[0].keys() if table else [])]
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{jobs}: not a readable CSV ({e})") from None
    unknown = [c for c in header if c not in COLUMNS]
    if not table or "face" not in header or unknown:
        raise UserError(f"{jobs}: needs a header row with the columns face and audio (or driver), optionally style "
                        f"and output; found {header or 'no rows'}")
    base = jobs.parent

    def path(value: str | None) -> Path | None:
        return base / value.strip() if value and value.strip() else None

    rows = []
    for n, raw in enumerate(table, start=1):
        cells = {k.strip(): v for k, v in raw.items() if k is not None}
        face, audio, driver = path(cells.get("face")), path(cells.get("audio")), path(cells.get("driver"))
        if face is None:
            raise UserError(f"{jobs} row {n}: no face")
        speech = audio or driver
        name = (cells.get("output") or "").strip() or f"{n:03d}-{face.stem}-{speech.stem if speech else 'none'}.mp4"
        rows.append(Row(n, face, audio, driver, path(cells.get("style")), out_dir / name))
    outputs = [r.output for r in rows]
    if len(set(outputs)) != len(outputs):
        raise UserError(f"{jobs}: two rows write the same output; give them different 'output' names")
    return rows


def run_row(row: Row, engine: str, renderer: str) -> Outcome:
    """One job; its UserError (or an unexpected error, logged with its traceback) becomes a failed outcome."""
    from presenter.offline.lipsync import LipsyncOptions, lipsync

    t0 = time.monotonic()
    if row.output.exists():
        return Outcome(row, "skipped", "", 0.0)
    try:
        result = lipsync(LipsyncOptions(row.face, row.audio, row.output, driver=row.driver, style=row.style,
                                        engine=engine, renderer=renderer))
    except UserError as e:
        return Outcome(row, "failed", str(e), time.monotonic() - t0)
    except Exception as e:                                  # noqa: BLE001 (one bad row must not stop the batch)
        log.error("row %d failed:\n%s", row.number, traceback.format_exc())
        return Outcome(row, "failed", f"{type(e).__name__}: {e}", time.monotonic() - t0)
    return Outcome(row, "done", "", time.monotonic() - t0, result.duration_s)


def default_workers() -> int:
    """Jobs at once: one per two cores (a job keeps about two busy), at least one."""
    return max(1, (os.cpu_count() or CPUS_PER_JOB) // CPUS_PER_JOB)


def _connect_ray(address: str) -> None:
    """ray.init for --ray ADDRESS ("local" starts a cluster sized to this machine); UserError when ray is
    missing or nothing answers at the address."""
    try:
        import ray
    except ModuleNotFoundError:
        raise UserError("--ray needs ray, which is not installed: pip install 'presenter[ray]'") from None
    if address == "local":
        # at least one job's worth of CPUs, or a one-core machine could never schedule a row
        ray.init(num_cpus=max(os.cpu_count() or 1, CPUS_PER_JOB), object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                 include_dashboard=False, logging_level=logging.WARNING)
        return
    if address != "auto":
        # ray.init retries an address where nothing listens for minutes: knock first
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise UserError(f"--ray {address}: give HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise UserError(f"--ray {address}: no Ray cluster answers there ({e}); give the head's host:port "
                            "(ray://host:10001 for Ray Client), 'auto' on a cluster node, or 'local'") from None
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError) as e:
        raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({e}); start one with 'ray start "
                        "--head', or give --ray local; a cluster with token authentication (Ray's default) needs "
                        "RAY_AUTH_MODE=token and its token in ~/.ray/auth_token here") from None


def run_on_ray(rows: list[Row], out_dir: Path, engine: str, renderer: str, address: str) -> list[Outcome]:
    """Each row as one Ray task running `run_row`, outcomes in row order; a task that dies (its worker
    killed, out of memory...) is that row's failure. out_dir is made once connected. Disconnects (and stops
    a local cluster) at the end."""
    _connect_ray(address)
    import ray

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        task = ray.remote(num_cpus=CPUS_PER_JOB)(run_row)
        pending = {task.remote(row, engine, renderer): row for row in rows}
        done: dict[int, Outcome] = {}
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            row = pending.pop(ref)
            try:
                done[row.number] = ray.get(ref)
            except ray.exceptions.RayError as e:
                done[row.number] = Outcome(row, "failed", f"{type(e).__name__}: {e}", 0.0)
            log.info("row %d/%d: %s", row.number, len(rows), done[row.number].status)
        return [done[row.number] for row in rows]
    finally:
        ray.shutdown()


def run_batch(jobs: Path, out_dir: Path, *, engine: str = "auto", renderer: str = "auto",
              workers: int = 1, ray_address: str | None = None) -> list[Outcome]:
    """Every row of a jobs CSV into out_dir (made if missing), in row order of the outcomes: in this process,
    a pool of `workers`, or as Ray tasks on the cluster at ray_address (see `run_on_ray`)."""
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if ray_address is not None:
        # absolute paths: a Ray worker does not run in this process's folder
        rows = read_jobs(jobs.absolute(), out_dir.absolute())
        return run_on_ray(rows, out_dir, engine, renderer, ray_address)
    rows = read_jobs(jobs, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if workers == 1:
        outcomes = []
        for row in rows:
            outcomes.append(run_row(row, engine, renderer))
            log.info("row %d/%d: %s", row.number, len(rows), outcomes[-1].status)
        return outcomes
    # spawn, not fork: a forked copy of a process with MediaPipe's and ONNX Runtime's threads can hang.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_row, rows, [engine] * len(rows), [renderer] * len(rows)))


def summary(outcomes: list[Outcome], wall_s: float) -> str:
    """A table of the rows and a last line with the counts and the throughput (minutes of video per minute)."""
    lines = [f"{'row':>4s}  {'status':8s} {'seconds':>8s} {'video s':>8s}  output / error", "-" * 72]
    for o in outcomes:
        detail = o.message if o.status == "failed" else str(o.row.output)
        lines.append(f"{o.row.number:>4d}  {o.status:8s} {o.seconds:8.1f} {o.video_s:8.2f}  {detail}")
    count = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    video = sum(o.video_s for o in outcomes)
    lines.append(f"{count['done']} done, {count['skipped']} skipped (already there), {count['failed']} failed; "
                 f"{video:.1f} s of video in {wall_s:.1f} s: {video / max(wall_s, 1e-9):.2f} minutes of video "
                 "per minute")
    return "\n".join(lines)
