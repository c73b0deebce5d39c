"""The shipped Style-SyncFormer lip-syncs speech it never heard: a held-out espeak voice."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.data.tts import Voice, synthesize
from presenter.models.lipsync import load_lipsync
from presenter.motion.syncformer_driver import SyncFormerDriver
from presenter.train.evaluate import bilabial_closure, opening_cm, run_driver

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")


@pytest.fixture(scope="module")
def spoken():
    """A held-out voice (Scottish accent, never trained on) saying bilabials next to open vowels,
    with silence around; -> (audio (N,), phones, opening (T,) cm, displacements (T, V, 3))."""
    from presenter.audio.features import torch_encode

    utt = synthesize("Bob bought a map for papa. My mom paid by phone.", voice=Voice("en-gb-scotland", "m3"),
                     rate_wpm=150)
    lead = 8000
    audio = np.concatenate([np.zeros(lead, np.float32), utt.audio, np.zeros(12000, np.float32)])
    phones = [(p, a + lead / 16000, b + lead / 16000) for p, a, b in utt.phones]
    n = -(-len(audio) // 640)
    # lead 0: the model itself against espeak's exact phone times (the voice it was trained on);
    # the live lead of one frame is calibrated on real read speech (tests/test_render_seal.py).
    disp = run_driver(SyncFormerDriver(load_lipsync(), encode=torch_encode(), lead_frames=0), audio, n)
    return audio, phones, opening_cm(disp), disp


def test_lips_seal_on_bilabials_and_open_on_open_vowels(spoken) -> None:
    """At least 70% of p/b/m close the lips; open vowels open them at least 0.4 cm on average,
    several times more than the bilabial frames."""
    _, phones, op, _ = spoken
    closed, total = bilabial_closure(op, phones)
    assert total >= 8 and closed / total >= 0.7, (closed, total)
    t = np.arange(len(op)) / 25
    vowel = np.zeros(len(op), bool)
    for p, a, b in phones:
        if p in OPEN_VOWELS:
            vowel |= (t >= a) & (t < b)
    assert op[vowel].mean() >= 0.4, op[vowel].mean()


def test_mouth_rests_in_silence(spoken) -> None:
    """Before the first phone the model returns exact rest (zeros): the idle frame shows as it is."""
    _, phones, _, disp = spoken
    first = next(a for p, a, _ in phones if p != "sil")
    quiet = int((first - 0.25) * 25)
    assert quiet > 3
    assert np.abs(disp[:quiet]).max() == 0.0


def test_the_onnx_step_drives_the_same_mouth(spoken) -> None:
    """The live driver's SyncFormer step under ONNX Runtime (the pipeline's default engine) gives the
    torch module's displacements on the same speech, frame for frame (within 1e-4 cm)."""
    from presenter.audio.features import torch_encode
    from presenter.engines.base import open_engine

    audio, _, _, disp = spoken
    n = len(disp)
    step = open_engine("syncformer", "onnxruntime", threads=1)
    fast = run_driver(SyncFormerDriver(load_lipsync(), encode=torch_encode(), lead_frames=0, step=step), audio, n)
    assert np.abs(disp).max() > 0.3                        # the speech moved the mouth
    np.testing.assert_allclose(fast, disp, atol=1e-4)
