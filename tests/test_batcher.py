"""The cross-session batcher: several sessions' frames through the generator as one batch, on CPU.

Real parts throughout: the default avatar's idle loop, the shipped generator weights (ONNX Runtime,
as served), and mouth poses from the loudness driver on espeak-ng speech.
"""
from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRAME_ATOL = 2          # uint8 levels: batched vs one-by-one frames (measured 0 on this CPU)
WINDOW_ATOL = 1e-3      # network windows in [0, 255] (measured 0)
GUARD_S = 120.0         # a hang guard only: nothing asserts how fast a tick is


@dataclass(frozen=True)
class Parts:
    renderer: object            # GeneratorRenderer on the default avatar
    poses: np.ndarray           # (F, P) loudness-driver poses of speech, rest poses dropped
    n_idle: int                 # idle-loop frames


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Parts]:
    from presenter.avatar.create import default_pack
    from presenter.motion.loudness import LoudnessDriver
    from presenter.motion.base import SAMPLE_RATE, is_rest
    from presenter.render.generator import GeneratorRenderer
    from presenter.server.client import speech_phrases

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRESENTER_HOME", str(tmp_path_factory.mktemp("home")))
        pack = default_pack()
        renderer = GeneratorRenderer(pack)
        audio, _ = speech_phrases(rate=SAMPLE_RATE)
        driver = LoudnessDriver()
        poses = np.concatenate([driver.push(audio), driver.flush()])
        poses = np.stack([p for p in poses if not is_rest(p)])
        assert len(poses) >= 24, f"only {len(poses)} speaking frames from the driver"
        yield Parts(renderer, poses, pack.n_frames)


def frame_plan(parts: Parts, lane: int, n: int) -> list[tuple[int, np.ndarray]]:
    """Lane `lane`'s first n (idle index, pose): each lane at its own place in the loop and the speech."""
    return [((7 * lane + k) % parts.n_idle, parts.poses[(5 * lane + 3 * k) % len(parts.poses)]) for k in range(n)]


def test_batched_frames_equal_per_session_frames(parts: Parts) -> None:
    """Four sessions, three frames each, through the batch (4 per tick): every frame equals the same
    frame rendered alone, and every window equals the network's one-frame window."""
    from presenter.stream.batcher import CrossSessionBatcher

    r = parts.renderer
    batcher = CrossSessionBatcher(r)
    lanes = [batcher.session() for _ in range(4)]
    plans = [frame_plan(parts, i, 3) for i in range(4)]
    subs = [[lane.submit(k, pose) for k, pose in plan] for lane, plan in zip(lanes, plans)]
    reports = [batcher.tick(gather_s=0) for _ in range(3)]
    assert [(t.frames, t.sessions, t.skipped) for t in reports] == [(4, 4, 0)] * 3
    for lane, plan, lane_subs in zip(lanes, plans, subs):
        for (k, pose), (prep, fut) in zip(plan, lane_subs):
            window = fut.result(0)
            np.testing.assert_allclose(window, r.generate(prep.target, prep.mask, prep.guidance), rtol=0,
                                       atol=WINDOW_ATOL)
            alone = r.render(k, pose).astype(np.int16)
            assert np.abs(lane.finish(prep, fut).astype(np.int16) - alone).max() <= FRAME_ATOL
    assert batcher.stats.frames == 12 and batcher.stats.max_batch == 4


def test_results_return_in_submit_order_and_lanes_share_fairly(parts: Parts) -> None:
    """A lane that queued five frames gets them back in order, two a tick (per_session=2), while a lane
    with one frame is served in the first tick beside it, not after the backlog."""
    from presenter.stream.batcher import CrossSessionBatcher

    batcher = CrossSessionBatcher(parts.renderer, per_session=2)
    busy, quiet = batcher.session(), batcher.session()
    done: list[tuple[str, int]] = []
    plan = frame_plan(parts, 1, 5)
    subs = []
    for seq, (k, pose) in enumerate(plan):
        prep, fut = busy.submit(k, pose)
        fut.add_done_callback(lambda _, seq=seq: done.append(("busy", seq)))
        subs.append((prep, fut))
    _, quiet_fut = quiet.submit(*frame_plan(parts, 2, 1)[0])
    quiet_fut.add_done_callback(lambda _: done.append(("quiet", 0)))

    first = batcher.tick(gather_s=0)
    assert (first.frames, first.sessions) == (3, 2) and quiet_fut.done()
    while any(not f.done() for _, f in subs):
        batcher.tick(gather_s=0)
    assert [seq for who, seq in done if who == "busy"] == list(range(5))
    for (k, pose), (prep, fut) in zip(plan, subs):        # each result is its own frame, not a neighbour's
        assert np.abs(busy.finish(prep, fut).astype(np.int16) - parts.renderer.render(k, pose)).max() <= FRAME_ATOL


class _StalledRenderer:
    """The generator renderer of a session whose own per-frame work hangs until `go` is set (a
    stuck warp, a descheduled thread): everything else is the real renderer."""

    def __init__(self, renderer, go: threading.Event) -> None:
        self._renderer, self._go = renderer, go
        self.entered = threading.Event()

    def __getattr__(self, name: str):
        return getattr(self._renderer, name)

    def prepare(self, index: int, mouth: np.ndarray):
        self.entered.set()
        assert self._go.wait(GUARD_S), "the test never released the stalled session"
        return self._renderer.prepare(index, mouth)


def test_stalled_session_does_not_block_others(parts: Parts) -> None:
    """With the batcher ticking in its thread, a session stuck in its own frame preparation is left out
    at each tick's deadline: two other sessions render frame after frame meanwhile; once released,
    the stalled session's frame comes through and is right."""
    from presenter.stream.batcher import CrossSessionBatcher

    go = threading.Event()
    batcher = CrossSessionBatcher(parts.renderer).start()
    stalled_renderer = _StalledRenderer(parts.renderer, go)
    stalled = batcher.session(stalled_renderer)
    live = [batcher.session() for _ in range(2)]
    result: dict[str, np.ndarray] = {}
    (k_s, pose_s), = frame_plan(parts, 3, 1)
    worker = threading.Thread(target=lambda: result.update(frame=stalled.render(k_s, pose_s)), daemon=True)
    try:
        worker.start()
        assert stalled_renderer.entered.wait(GUARD_S)
        for i, lane in enumerate(live):
            for k, pose in frame_plan(parts, i, 4):
                frame = lane.render(k, pose)             # blocks for its tick: returns while `stalled` hangs
                assert np.abs(frame.astype(np.int16) - parts.renderer.render(k, pose)).max() <= FRAME_ATOL
        assert worker.is_alive() and not go.is_set()
        assert batcher.stats.frames == 8 and batcher.stats.late >= 1
        go.set()
        worker.join(GUARD_S)
        assert not worker.is_alive()
        assert np.abs(result["frame"].astype(np.int16) - parts.renderer.render(k_s, pose_s)).max() <= FRAME_ATOL
    finally:
        go.set()
        batcher.close()


def test_rest_pose_cancelled_frame_and_closed_lane(parts: Parts) -> None:
    """render(i, None) is the idle frame without a tick; a frame its caller cancelled is left out of the
    batch while the others go through; a closed lane's queued frame ends with FrameDropped and the lane
    refuses new frames."""
    from presenter.stream.batcher import CrossSessionBatcher, FrameDropped

    batcher = CrossSessionBatcher(parts.renderer, per_session=2)
    lane, other = batcher.session(), batcher.session()
    np.testing.assert_array_equal(lane.render(3, None), parts.renderer.render(3, None))
    (k0, p0), (k1, p1) = frame_plan(parts, 0, 2)
    _, cancelled = other.submit(k0, p0)
    _, kept = other.submit(k1, p1)
    assert cancelled.cancel()
    assert batcher.tick(gather_s=0).frames == 1 and kept.done() and not kept.exception()

    _, fut = lane.submit(k0, p0)
    lane.close()
    with pytest.raises(FrameDropped):
        fut.result(0)
    with pytest.raises(FrameDropped):
        lane.submit(k0, p0)
    assert batcher.tick(gather_s=0).frames == 0 and batcher.lanes == 1


def test_ticks_stay_on_one_grid(parts: Parts) -> None:
    """next_tick gives the ticking batcher's grid t0 + k * tick_s: a session can put its frame clock on it."""
    from presenter.stream.batcher import CrossSessionBatcher

    batcher = CrossSessionBatcher(parts.renderer, tick_s=0.04)
    with pytest.raises(RuntimeError, match="start"):
        batcher.next_tick()
    batcher.start()
    try:
        first = batcher.next_tick()
        assert batcher.next_tick(first) == first
        assert batcher.next_tick(first + 1e-4) == pytest.approx(first + 0.04)
        assert batcher.next_tick(first + 4.0 - 1e-4) == pytest.approx(first + 4.0)
    finally:
        batcher.close()
