"""Forced alignment of Debian's pocketsphinx-testdata: real speech with phone timings (validation only)."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.data import align_real
from presenter.motion.visemes import PHONES

pytest.importorskip("pocketsphinx")
if not align_real.transcripts():
    pytest.skip(f"pocketsphinx-testdata is not installed under {align_real.TESTDATA_DIR}",
                allow_module_level=True)


def test_alignment_of_one_testdata_file() -> None:
    """One LibriVox utterance aligns: its words are the transcript's, in order; phones are
    contiguous, monotonic and inside the audio; speech phones are louder than silence."""
    from presenter.audio.io import as_float_mono, read_wav

    name, wav, text = next(t for t in align_real.transcripts() if t[0].endswith("-0880"))
    pcm, rate = read_wav(wav)
    audio = as_float_mono(pcm)
    assert rate == align_real.SAMPLE_RATE
    result = align_real.align(audio, text)
    assert [w for w, _, _ in result.words] == text.split()
    duration = len(audio) / rate
    phones = result.phones
    assert phones[0][1] == 0.0 and phones[-1][2] == pytest.approx(duration)
    for (_, s, e), (_, s2, _) in zip(phones, phones[1:]):
        assert 0.0 <= s < e <= duration and s2 == pytest.approx(e)
    assert {p for p, _, _ in phones} <= set(PHONES)
    assert sum(p != "sil" for p, _, _ in phones) >= 20

    def rms(label: str) -> float:
        idx = np.concatenate([np.arange(int(s * rate), int(e * rate)) for p, s, e in phones
                              if (p == "sil") == (label == "sil")])
        return float(np.sqrt(np.mean(audio[idx].astype(np.float64) ** 2)))

    assert rms("speech") > 4 * rms("sil")


def test_words_inside_their_phones() -> None:
    """Every aligned word spans at least one phone, and word spans do not overlap."""
    from presenter.audio.io import as_float_mono, read_wav

    name, wav, text = next(t for t in align_real.transcripts() if t[0] == "cards/005")
    audio = as_float_mono(read_wav(wav)[0])
    result = align_real.align(audio, text)
    assert [w for w, _, _ in result.words] == text.split()
    for (_, s, e), (_, s2, _) in zip(result.words, result.words[1:]):
        assert s < e <= s2 + 1e-9


def test_real_validation_set() -> None:
    """The validation set holds all ten transcribed utterances as (name, 16 kHz float32 audio,
    phones in the shared inventory covering the clip)."""
    clips = align_real.real_validation_set()
    assert len(clips) == 10
    for name, audio, phones in clips:
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert phones[-1][2] == pytest.approx(len(audio) / align_real.SAMPLE_RATE)
        assert {p for p, _, _ in phones} <= set(PHONES)
