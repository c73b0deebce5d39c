"""espeak-ng synthesis through ctypes: timing, resampling, voices, phone mapping, concurrency."""
from __future__ import annotations

import logging
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from presenter.data import tts
from presenter.data.sentences import sentences
from presenter.motion.visemes import PHONES

VOWELS = {"aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw"}
TEXT = "Bob bought a big map of the bay, and we watched the moon. Who knew?"


def _rms(audio: np.ndarray, start: float, end: float, margin_s: float = 0.01) -> float:
    a, b = int((start + margin_s) * tts.SAMPLE_RATE), int((end - margin_s) * tts.SAMPLE_RATE)
    seg = audio[a:b].astype(np.float64)
    return float(np.sqrt(np.mean(seg ** 2))) if len(seg) else 0.0


@pytest.mark.parametrize("voice", ["en-us+f3", "en-gb-x-rp+m3", "en-029+klatt2"])
def test_phone_times_line_up_with_audio_energy(voice: str) -> None:
    """Pauses (including the silence before the first phone) are quiet and every vowel is loud:
    each vowel's interior is at least 10x (20 dB) louder than the loudest pause interior."""
    utt = tts.synthesize(TEXT, voice=voice)
    first, start, end = utt.phones[0]
    assert first == "sil" and _rms(utt.audio, start, end, margin_s=0.0) < 1e-3
    pauses = [(s, e) for p, s, e in utt.phones if p == "sil" and e - s > 0.04]
    vowels = [(s, e) for p, s, e in utt.phones if p in VOWELS and e - s > 0.05]
    assert len(pauses) >= 2 and len(vowels) >= 10
    loudest_pause = max(_rms(utt.audio, s, e) for s, e in pauses)
    quietest_vowel = min(_rms(utt.audio, s, e) for s, e in vowels)
    assert quietest_vowel > 10 * loudest_pause, (quietest_vowel, loudest_pause)


def test_phones_are_contiguous_and_cover_the_audio() -> None:
    """Phones start at 0, end at the last sample, follow each other without gaps or overlaps,
    have positive length, and use the shared inventory only."""
    utt = tts.synthesize(TEXT, voice="en-us-nyc+m7", rate_wpm=220, pitch=30)
    assert utt.phones[0][1] == 0.0
    assert utt.phones[-1][2] == pytest.approx(utt.duration_s, abs=1e-9)
    for (_, _, end), (_, start, _) in zip(utt.phones, utt.phones[1:]):
        assert start == pytest.approx(end, abs=1e-9)
    assert all(e > s for _, s, e in utt.phones)
    assert {p for p, _, _ in utt.phones} <= set(PHONES)
    assert utt.audio.dtype == np.float32 and np.abs(utt.audio).max() <= 1.0


def test_resampling_keeps_duration_and_timing() -> None:
    """22,050 -> 16,000 Hz keeps the length (ceil(n * 320 / 441)) and moves a click at 0.5 s by
    less than one output sample; a synthesised utterance lasts as long as espeak's audio."""
    raw = np.zeros(22050, np.int16)
    raw[11025] = 20000
    out = tts.resample_to_16k(raw)
    assert len(out) == int(np.ceil(22050 * 320 / 441))
    assert abs(int(np.argmax(out)) - 8000) <= 1
    utt = tts.synthesize("Timing must survive resampling.")
    espeak_end = utt.espeak_phones[-1][2]
    assert abs(utt.duration_s - espeak_end) < 0.002


def test_rate_scales_duration_and_pitch_keeps_the_phones() -> None:
    """Speaking at 300 wpm is much shorter than at 120 wpm; changing the pitch changes the
    samples, not the phones, and the length by under 3% (espeak cuts segments at whole pitch
    periods, so boundaries drift by a few ms; the events describe each output exactly)."""
    slow = tts.synthesize(TEXT, rate_wpm=120)
    fast = tts.synthesize(TEXT, rate_wpm=300)
    assert slow.duration_s > 1.8 * fast.duration_s
    low = tts.synthesize(TEXT, voice="en-us+m3", pitch=10)
    high = tts.synthesize(TEXT, voice="en-us+m3", pitch=90)
    assert not np.array_equal(low.audio[:1000], high.audio[:1000])
    assert [p for p, _, _ in low.phones] == [p for p, _, _ in high.phones]
    assert abs(low.duration_s - high.duration_s) < 0.03 * low.duration_s


def test_voices_and_holdout_split() -> None:
    """There are many English voices; the held-out split is non-empty, disjoint from training,
    and every held-out accent and variant named in the constants exists in espeak."""
    langs, variants = tts.languages(), tts.variants()
    assert "en-us" in langs and len(langs) >= 6 and len(variants) >= 50
    assert set(tts.HOLDOUT_LANGUAGES) <= set(langs) and set(tts.HOLDOUT_VARIANTS) <= set(variants)
    held, train = tts.voices(holdout=True), tts.voices(holdout=False)
    assert held and train and not set(held) & set(train)
    assert len(held) + len(train) == len(tts.voices())
    assert not tts.EXCLUDED_VARIANTS & set(variants)


def test_draw_speaker_respects_the_split_and_the_seed() -> None:
    """Drawn speakers come from the requested split, within the corpus ranges, and the same
    generator seed draws the same speakers."""
    draws = [tts.draw_speaker(np.random.default_rng(7), holdout=h) for h in (False, True)]
    assert not draws[0]["voice"].holdout and draws[1]["voice"].holdout
    again = tts.draw_speaker(np.random.default_rng(7), holdout=False)
    assert again == draws[0]
    rng = np.random.default_rng(8)
    for _ in range(50):
        d = tts.draw_speaker(rng)
        assert tts.CORPUS_RATE_WPM[0] <= d["rate_wpm"] <= tts.CORPUS_RATE_WPM[1]
        assert tts.CORPUS_PITCH[0] <= d["pitch"] <= tts.CORPUS_PITCH[1]
    utt = tts.synthesize("Draw me a voice.", **draws[0])
    assert utt.voice == draws[0]["voice"] and utt.duration_s > 0.5


def test_every_espeak_phoneme_of_the_sentence_list_is_mapped(caplog: pytest.LogCaptureFixture) -> None:
    """Across all English accents, every phoneme espeak produces for every third sentence of the
    list has an explicit entry in the mapping (no 'unknown phoneme' warning is logged)."""
    with caplog.at_level(logging.WARNING, logger="presenter.data.tts"):
        for lang in tts.languages():
            tts.synthesize(" ".join(sentences()[::3]), voice=tts.Voice(lang, "m1"))
    assert not [r for r in caplog.records if "not in ESPEAK_TO_PHONES" in r.getMessage()]


def test_unknown_mnemonics_fall_back_by_suffix() -> None:
    """An unlisted mnemonic with a suffix mark reduces to its base; accents override defaults."""
    assert tts.to_phones("l#") == ("l",)
    assert tts.to_phones("V", "en-us") == ("ah",)
    assert tts.to_phones("V", "en-gb-x-gbclan") == ("uh",)
    assert tts.to_phones("A@", "en-us") == ("aa", "r")


def test_audio_depends_on_the_arguments_only() -> None:
    """espeak carries state between syntheses; ours do not: the same call gives the same
    samples whatever was spoken before, and another seed changes only the noise."""
    text = "Fresh fish, please."
    first = tts.synthesize(text, voice="en-us+f2", seed=1)
    tts.synthesize("Something else entirely, with a different voice.", voice="en-gb-x-rp+m4")
    again = tts.synthesize(text, voice="en-us+f2", seed=1)
    np.testing.assert_array_equal(first.audio, again.audio)
    assert first.phones == again.phones
    other = tts.synthesize(text, voice="en-us+f2", seed=2)
    assert not np.array_equal(first.audio, other.audio) and other.phones == first.phones


def test_threads_get_the_same_audio_as_one_thread() -> None:
    """espeak is global C state: concurrent calls from threads are serialised and each gets its
    own, correct result."""
    texts = [f"Thread number {k} says hello to the bumblebee." for k in range(6)]
    expected = [tts.synthesize(t, voice="en-us+f2").audio for t in texts]
    got: dict[int, np.ndarray] = {}

    def work(k: int) -> None:
        got[k] = tts.synthesize(texts[k], voice="en-us+f2").audio

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, audio in enumerate(expected):
        np.testing.assert_array_equal(got[k], audio)


def _worker_audio(text: str) -> np.ndarray:
    return tts.synthesize(text, voice="en-gb-x-rp+f5").audio


def test_worker_processes_synthesise_like_the_parent() -> None:
    """Worker processes (forked after the parent used espeak) produce the parent's audio."""
    text = "Maybe the workers make the same sound."
    expected = _worker_audio(text)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        results = list(pool.map(_worker_audio, [text, text]))
    for audio in results:
        np.testing.assert_array_equal(audio, expected)
