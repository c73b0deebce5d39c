"""The recorded live call (`python -m presenter.offline.live_call`): its clocks and its phone
placement on signals whose timing is known, and one short real call over loopback WebRTC."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.offline.live_call import (LEAD_S, SENT_RATE, Options, Timeline, Utterance, _clock, measure,
                                         place_phones)


def test_clock_takes_each_frame_at_the_release_of_the_one_before() -> None:
    """aiortc hands a frame over when the next one's packet arrives: the clock recovers the
    packets' arrival (send + transit), not the release a frame later, through jitter and gaps."""
    rng = np.random.default_rng(0)
    k = np.delete(np.arange(300), [40, 41, 200])                  # three frames lost
    arrival = 100.0 + k * 0.04 + 0.005 + rng.uniform(0, 0.004, k.size)
    release = np.append(arrival[1:], arrival[-1] + 0.04)          # released when the next one arrives
    assert _clock(list(release), list(k * 0.04), 0.04) == pytest.approx(100.007, abs=0.002)


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise in syllable-like bursts (50-200 ms, three loudness levels), 16 kHz."""
    rng = np.random.default_rng(seed)
    env, n = [], int(seconds * SENT_RATE)
    while sum(map(len, env)) < n:
        env.append(np.full(int(rng.uniform(0.05, 0.2) * SENT_RATE), rng.choice([0.0, 0.05, 0.3])))
    return (np.concatenate(env)[:n] * rng.standard_normal(n)).astype(np.float32)


def test_phones_follow_a_returned_voice_whose_delay_steps_mid_utterance() -> None:
    """The returned voice is 160 ms late, then 200 ms late after 40 ms of inserted silence (as
    the live stream does under load): each phone is placed where the returned voice plays it."""
    speech_s, step_s = 6.0, 3.0
    sent = np.concatenate([np.zeros(int(LEAD_S * SENT_RATE), np.float32), speechlike(speech_s)])
    cut = int((LEAD_S + step_s) * SENT_RATE)
    returned = np.concatenate([np.zeros(int(0.16 * SENT_RATE)), sent[:cut], np.zeros(int(0.04 * SENT_RATE)),
                               sent[cut:]]).astype(np.float32)
    returned = np.repeat(returned, 3)                             # 48 kHz, as it comes back
    phones = [("aa", t, t + 0.1) for t in np.arange(0, speech_s - 0.1, 0.1)]
    tl = Timeline(frames=[], v0=0.0, a0=0.0, returned=returned, rate=48000, literal_video_late_s=0.0)
    placed, report = place_phones(tl, sent, 0.0, [Utterance("u", LEAD_S, speech_s, phones)])
    for (_, s, _), (_, got, _) in zip(phones, placed):
        assert got == pytest.approx(LEAD_S + s + (0.16 if s < step_s else 0.2), abs=0.011)
    lag = report["returned_after_sent_s"]
    assert lag["min"] == pytest.approx(0.16, abs=0.011) and lag["max"] == pytest.approx(0.2, abs=0.011)
    assert report["inserted_s"] == pytest.approx(0.04, abs=0.02) and report["dropped_s"] <= 0.02


@pytest.mark.skipif(not __import__("os").path.exists("/usr/share/pocketsphinx/test/data/cards"),
                    reason="pocketsphinx-testdata is not installed")
def test_a_short_real_call_is_recorded_placed_and_judged(live_pipeline) -> None:
    """Two held-out utterances through a loopback call: frames and voice come back, every frame
    that arrived shows a face to the landmarker, the voice returns later than it was sent (by
    less than 1.5 s), and every p/b/m and t/d/k/g lands inside the recording and is judged."""
    from presenter.data.align_real import real_validation_set

    clips = [c for c in real_validation_set() if c.name in ("cards/001", "cards/005")]
    assert len(clips) == 2
    r = measure(Options(engine=live_pipeline.engine, gap_s=1.0), pipeline=live_pipeline, clips=clips)
    v, a, j = r["video"], r["audio"], r["judge"]
    expected = r["audio"]["sent_s"] * 25
    assert v["frames"] >= 0.5 * expected
    assert j["frames_without_face"] - v["missing_frames"] <= 0.05 * v["frames"]
    assert a["returned_s"] >= 0.9 * a["sent_s"]
    assert 0.0 < a["lag"]["returned_after_sent_s"]["median"] < 1.5
    phones = [p for c in clips for p, _, _ in c.phones]
    assert j["at_zero"]["pbm_n"] == sum(p in ("p", "b", "m") for p in phones) >= 2
    assert j["at_zero"]["tdkg_n"] == sum(p in ("t", "d", "k", "g") for p in phones) >= 4
    assert -5 <= j["offset_frames"] <= 5
