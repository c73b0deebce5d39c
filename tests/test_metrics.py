"""/metrics counts what the streams' cumulative stats gained, including the live extra delay."""
from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from presenter.server.metrics import Metrics
from presenter.stream.stream import FRAME_S, StreamStats


def _values(m: Metrics) -> dict[str, float]:
    return {s.name: s.value for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def test_stats_deltas_become_counters_and_the_extra_delay_a_gauge() -> None:
    m = Metrics()
    before = StreamStats()
    after = dataclasses.replace(before, late_poses=3, held_silence=2, skipped_silence=1, extra_delay_s=0.08,
                                degraded=5)
    m.observe_stats(before, after)
    m.observe_stats(after, dataclasses.replace(after, extra_delay_s=0.04))      # decays: the gauge follows
    v = _values(m)
    assert v["presenter_poses_late_total"] == 3
    assert v["presenter_frames_degraded_total"] == 5
    assert abs(v["presenter_silence_held_seconds_total"] - 2 * FRAME_S) < 1e-9
    assert abs(v["presenter_silence_skipped_seconds_total"] - FRAME_S) < 1e-9
    assert abs(v["presenter_extra_delay_seconds"] - 0.04) < 1e-9
