"""Phones -> mouth parameters: the table, closure on bilabials, open vowels, rest, coarticulation."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.data.tts import synthesize
from presenter.motion.mouth import CLOSE, JAW, N_PARAMS, PARAM_HIGH, PARAM_LOW, ROUND, TEETH
from presenter.motion.visemes import PHONE_VISEMES, PHONES, VISEME_TABLE, VISEMES, phones_to_params

FPS = 25
OPEN_VOWELS = {"aa", "ae", "ao", "ah"}
BILABIALS = {"p", "b", "m"}


def _track(phones: list[tuple[str, float, float]]) -> np.ndarray:
    return phones_to_params(phones, int(np.ceil(phones[-1][2] * FPS)) + 1, fps=FPS)


def _phone_at(phones: list[tuple[str, float, float]], t: float) -> str:
    return next((p for p, s, e in phones if s <= t < e), "sil")


def test_table_covers_the_inventory_within_parameter_ranges() -> None:
    """Every inventory phone has a viseme, every target lies in mouth.py's ranges, the table is
    in the module's documentation, and the open vowels have the four largest jaw targets."""
    assert set(PHONES) == set(PHONE_VISEMES) and "sil" in PHONES and len(PHONES) == 40
    for v in VISEMES.values():
        assert v.target.shape == (N_PARAMS,)
        assert np.all(v.target >= PARAM_LOW) and np.all(v.target <= PARAM_HIGH)
        assert v.dom > 0 and v.lead_s > 0 and v.lag_s > 0
    import presenter.motion.visemes as module
    assert VISEME_TABLE.strip() in (module.__doc__ or "")
    jaw = {p: VISEMES[PHONE_VISEMES[p][0]].target[JAW] for p in PHONES if len(PHONE_VISEMES[p]) == 1}
    assert set(sorted(jaw, key=jaw.get)[-4:]) == OPEN_VOWELS


@pytest.mark.parametrize("voice", ["en-us+f3", "en-gb-x-rp+m3"])
def test_bilabials_close_the_lips_on_espeak_timings(voice: str) -> None:
    """With real espeak phone timings, every frame whose time lies inside a p/b/m segment, and
    the frame nearest each bilabial's centre, has close >= 0.9."""
    utt = synthesize("Bob bought a big map. Pam made maple pie, maybe by the pump.", voice=voice)
    params = _track(utt.phones)
    t = np.arange(len(params)) / FPS
    labials = [(s, e) for p, s, e in utt.phones if p in BILABIALS]
    assert len(labials) >= 12
    for s, e in labials:
        inside = (t >= s) & (t <= e)
        assert np.all(params[inside, CLOSE] >= 0.9)
        assert params[int(round((s + e) / 2 * FPS)), CLOSE] >= 0.9


def test_open_vowels_open_the_jaw_most_on_espeak_timings() -> None:
    """On real espeak timings, the widest jaw of the clip falls in an open vowel, and frames in
    open vowels are on average clearly more open (+0.2) than frames in any other speech sound."""
    utt = synthesize("Father parked the car far from the barn, and we saw a cat.", voice="en-us+m1")
    params = _track(utt.phones)
    labels = [_phone_at(utt.phones, k / FPS) for k in range(len(params))]
    assert labels[int(np.argmax(params[:, JAW]))] in OPEN_VOWELS
    is_open = np.array([p in OPEN_VOWELS for p in labels])
    is_other = np.array([p not in OPEN_VOWELS and p != "sil" for p in labels])
    assert params[is_open, JAW].mean() > params[is_other, JAW].mean() + 0.2


def test_silence_relaxes_to_rest() -> None:
    """150 ms into a silence after an open vowel, and before speech starts, every parameter is
    back at rest (|p| < 0.05)."""
    phones = [("sil", 0.0, 0.6), ("aa", 0.6, 0.9), ("m", 0.9, 1.0), ("aa", 1.0, 1.3), ("sil", 1.3, 2.5)]
    params = _track(phones)
    t = np.arange(len(params)) / FPS
    rest = (t <= 0.4) | (t >= 1.45)
    assert np.abs(params[rest]).max() < 0.05
    assert params[(t > 0.65) & (t < 0.85), JAW].min() > 0.7


def test_rounding_anticipates_across_consonants() -> None:
    """Rounding for 'oo' starts across the preceding consonants: 100 ms before the vowel the
    lips are already rounder (by > 0.25) than before 'ee', and rising."""
    def track(vowel: str) -> np.ndarray:
        return _track([("sil", 0.0, 0.4), ("s", 0.4, 0.52), ("t", 0.52, 0.6), (vowel, 0.6, 0.9), ("sil", 0.9, 1.6)])

    oo, ee = track("uw"), track("iy")
    k = int(round((0.6 - 0.1) * FPS))                  # frame 100 ms before the vowel
    assert oo[k, ROUND] - ee[k, ROUND] > 0.25
    assert oo[k - 1, ROUND] < oo[k, ROUND] < oo[k + 1, ROUND]
    assert oo[int(0.75 * FPS), ROUND] > 0.8


def test_labiodentals_show_teeth_and_alveolars_keep_the_lips_apart() -> None:
    """f/v show the teeth (teeth >= 0.8) without a seal; t d n s k g between vowels keep the
    lips apart (close < 0.2) with teeth visible (> 0.3)."""
    phones = [("sil", 0.0, 0.3), ("ah", 0.3, 0.5), ("f", 0.5, 0.7), ("ah", 0.7, 0.9)]
    for k, c in enumerate(["t", "d", "n", "s", "k", "g"]):
        s = 0.9 + 0.4 * k
        phones += [(c, s, s + 0.2), ("ah", s + 0.2, s + 0.4)]
    phones.append(("sil", phones[-1][2], phones[-1][2] + 0.5))
    params = _track(phones)
    for p, s, e in phones:
        centre = params[int(round((s + e) / 2 * FPS))]
        if p == "f":
            assert centre[TEETH] >= 0.8 and centre[CLOSE] < 0.9
        elif p in {"t", "d", "n", "s", "k", "g"}:
            assert centre[CLOSE] < 0.2 and centre[TEETH] > 0.3, (p, centre)


def test_a_bilabial_shorter_than_a_frame_still_seals() -> None:
    """A 20 ms /p/ that falls between two frame times still closes the lips in its nearest frame."""
    phones = [("sil", 0.0, 0.2), ("aa", 0.2, 0.405), ("p", 0.405, 0.425), ("aa", 0.425, 0.7), ("sil", 0.7, 1.0)]
    params = _track(phones)
    assert params[round(0.415 * FPS), CLOSE] == pytest.approx(1.0)
    assert params[round(0.3 * FPS), CLOSE] < 0.2


def test_neighbours_blend() -> None:
    """A short /t/ between open vowels is pulled open by them (jaw above its own target), and
    the jaw moves smoothly (no frame-to-frame jump above 0.5) through real speech."""
    params = _track([("sil", 0.0, 0.2), ("aa", 0.2, 0.4), ("t", 0.4, 0.44), ("aa", 0.44, 0.7), ("sil", 0.7, 1.0)])
    assert params[round(0.42 * FPS), JAW] > VISEMES["TDN"].target[JAW] + 0.2
    utt = synthesize("Oh, maybe the boat will be back by noon.", voice="en-us+f5")
    track = _track(utt.phones)
    assert np.abs(np.diff(track[:, JAW])).max() < 0.5


def test_unknown_phone_is_an_error() -> None:
    """A phone outside the shared inventory is rejected with a message naming it."""
    with pytest.raises(ValueError, match="'xx'"):
        phones_to_params([("xx", 0.0, 0.1)], 3)
