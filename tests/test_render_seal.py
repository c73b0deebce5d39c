"""Sealed lips stay sealed in the image: the shared mesh posing and the live path on real speech."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.face.canonical import LOWER_INNER_LIP, UPPER_INNER_LIP
from presenter.motion.mouth import REST_GAP_CM
from presenter.render.mesh import SEAL_SETTLE_CM, settle_sealed


def _pose(gap_cm: float, jaw_cm: float) -> np.ndarray:
    """Displacements (V, 3): the lower face moved down jaw_cm, lips gap_cm apart, a little rounding."""
    rng = np.random.default_rng(0)
    d = rng.normal(0, 0.02, (468, 3)).astype(np.float32)
    d[:, 1] -= jaw_cm
    d[UPPER_INNER_LIP, 1] = -jaw_cm
    d[LOWER_INNER_LIP, 1] = -jaw_cm - (gap_cm - REST_GAP_CM)
    return d


def test_open_mouths_are_untouched_and_closed_ones_lose_their_vertical_motion() -> None:
    """Above the settle gap nothing changes; below it the vertical motion shrinks with the gap
    (none left at a sealed gap), and the sideways and depth motion (rounding) is kept."""
    wide = _pose(SEAL_SETTLE_CM + 0.2, 0.6)
    assert settle_sealed(wide) is wide
    for gap in (0.0, 0.1, 0.3):
        d = _pose(gap, 0.4)
        s = settle_sealed(d)
        np.testing.assert_array_equal(s[:, [0, 2]], d[:, [0, 2]])
        np.testing.assert_allclose(s[:, 1], d[:, 1] * max(gap, 0.0) / SEAL_SETTLE_CM, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_live_driver_and_renderer_seal_bilabials_on_the_default_avatar(live_pipeline) -> None:
    """The shipped SyncFormer through the live renderer on held-out read speech (no network):
    most p/b/m read as sealed lips, t/d/k/g stay open (DESIGN.md 7b judge)."""
    from presenter.data.align_real import real_validation_set
    from presenter.offline.judge import DONE_WHEN, mouth_openings, phonetic_scores

    p = live_pipeline
    openings, phones, t0 = [], [], 0.0
    for clip in real_validation_set():
        d = p.new_driver()
        a = clip.audio
        poses = np.concatenate([d.push(a[i:i + 320]) for i in range(0, len(a), 320)] + [d.flush()])
        openings.append(mouth_openings(p.renderer.render(i, None if np.all(pz == 0) else pz)
                                       for i, pz in enumerate(poses)))
        phones += [(ph, s + t0, e + t0) for ph, s, e in clip.phones]
        t0 += len(poses) / 25
    scores = phonetic_scores(np.concatenate(openings), 25, phones)
    at0 = scores["at_zero"]
    # Measured 2026-12-03 (generator, one-frame pose lead, int8 encoder one call per two frames, lip
    # gate): p/b/m 0.88, t/d/k/g 0.95, labial AUC 0.91 (without the gate 0.82 / 0.74 / 0.79). p/b/m and
    # t/d/k/g are held to the judge's bars; the AUC a little under the bar it reaches (90 % interval +-0.06).
    assert at0["pbm_sealed"] >= DONE_WHEN["pbm_sealed"] and at0["tdkg_open"] >= DONE_WHEN["tdkg_open"], scores
    assert at0["labial_auc"] >= 0.85, scores
    assert abs(scores["offset_frames"]) <= 1
