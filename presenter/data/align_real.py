"""Real read speech with phone timings, for VALIDATION ONLY: never train on these clips.

The speech is Debian's `pocketsphinx-testdata` (BSD-2, /usr/share/pocketsphinx/test/data):
16 kHz mono WAVs with transcripts, from LibriVox ("Sense and Sensibility", 5 utterances) and
the "cards" set (5 utterances), about 35 s in all. Their phone timings come from forced
alignment with PyPI `pocketsphinx` and its bundled en-us acoustic model and CMU dictionary:

    set_align_text(words) -> process the audio (word alignment)
    set_alignment()       -> process the audio again (phone alignment)
    get_alignment()       -> words -> phones with start frame and duration (10 ms frames)

Keeping them out of training is what makes them a fair test of how a model trained on
synthetic speech transfers to human voices; `real_validation_set()` is the only entry point
the training code should need, and only its evaluation step may call it.

Phones are mapped into the shared inventory (`presenter.motion.visemes.PHONES`): ARPAbet in
lower case; silence, fillers and noise phones (SIL, +NSN+, ...) become `sil`. Gaps the aligner
leaves between words are filled with `sil`, so phones are contiguous over the clip.
"""
from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from presenter.audio.io import as_float_mono, read_wav
from presenter.errors import UserError
from presenter.motion.visemes import PHONES

log = logging.getLogger(__name__)

TESTDATA_DIR = Path("/usr/share/pocketsphinx/test/data")
SAMPLE_RATE = 16000
FRAME_RATE = 100                                # pocketsphinx frames per second (10 ms)
# (subfolder, transcript file): lines "<s> words </s> (file id)"
_SETS = (("librivox", "transcription"), ("cards", "cards.transcription"))
_LINE = re.compile(r"^\s*(?:<s>)?\s*(.*?)\s*(?:</s>)?\s*\(([^()]+)\)\s*$")
_FILLER_WORDS = {"<s>", "</s>", "<sil>"}


class RealClip(NamedTuple):
    """One validation utterance: name, audio (N,) float32 at 16 kHz, phones [(phone, start_s, end_s)]."""

    name: str
    audio: np.ndarray
    phones: list[tuple[str, float, float]]


class Alignment(NamedTuple):
    """Forced alignment of one utterance: contiguous phones and the words with their spans."""

    phones: list[tuple[str, float, float]]
    words: list[tuple[str, float, float]]


def _phone(name: str) -> str:
    p = name.lower()
    return p if p in PHONES and p != "sil" else "sil"


_DECODER_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _decoder():  # noqa: ANN202 (pocketsphinx.Decoder; imported lazily, it is an optional dependency)
    try:
        from pocketsphinx import Decoder
    except ImportError as e:
        raise UserError("real-speech validation needs PyPI pocketsphinx: pip install 'presenter[train]'") from e
    return Decoder(samprate=SAMPLE_RATE, loglevel="ERROR")


def align(audio: np.ndarray, transcript: str) -> Alignment:
    """Force-align 16 kHz mono audio (N,) to `transcript` (words in the CMU dictionary)."""
    words = transcript.lower().split()
    pcm = (np.clip(np.asarray(audio, np.float32), -1, 1) * 32767).astype("<i2").tobytes()
    total_s = len(audio) / SAMPLE_RATE
    with _DECODER_LOCK:
        dec = _decoder()
        missing = [w for w in words if dec.lookup_word(w) is None]
        if missing:
            raise UserError(f"words not in pocketsphinx's dictionary: {missing}")
        dec.set_align_text(" ".join(words))
        for second_pass in (False, True):
            if second_pass:
                dec.set_alignment()
            dec.start_utt()
            dec.process_raw(pcm, full_utt=True)
            dec.end_utt()
        result = dec.get_alignment()
        if result is None:
            raise RuntimeError(f"pocketsphinx could not align {transcript!r}")
        raw_words = [(w.name, w.start / FRAME_RATE, (w.start + w.duration) / FRAME_RATE) for w in result.words()]
        raw_phones = [(p.name, p.start / FRAME_RATE, (p.start + p.duration) / FRAME_RATE) for p in result.phones()]
    out_words = [(re.sub(r"\(\d+\)$", "", w), s, e) for w, s, e in raw_words if w not in _FILLER_WORDS]
    return Alignment(_contiguous(raw_phones, total_s), out_words)


def _contiguous(raw: list[tuple[str, float, float]], total_s: float) -> list[tuple[str, float, float]]:
    """Aligner phones -> shared phones covering [0, total_s], gaps and fillers merged into `sil`."""
    out: list[tuple[str, float, float]] = []

    def add(phone: str, start: float, end: float) -> None:
        if end <= start:
            return
        if out and out[-1][0] == phone == "sil":
            out[-1] = ("sil", out[-1][1], end)
        else:
            out.append((phone, start, end))

    cursor = 0.0
    for name, start, end in raw:
        start, end = max(start, cursor), min(end, total_s)
        add("sil", cursor, start)
        add(_phone(name), start, end)
        cursor = max(cursor, end)
    add("sil", cursor, total_s)
    return out


def transcripts(root: Path = TESTDATA_DIR) -> list[tuple[str, Path, str]]:
    """(name, wav path, transcript) for every testdata utterance with a transcript and a WAV."""
    found = []
    for sub, listing in _SETS:
        path = root / sub / listing
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            m = _LINE.match(line)
            if m and (wav := root / sub / f"{m.group(2)}.wav").exists():
                found.append((f"{sub}/{m.group(2)}", wav, " ".join(m.group(1).split())))
    return found


@lru_cache(maxsize=1)
def _validation_set(root: Path) -> tuple[RealClip, ...]:
    clips = []
    for name, wav, text in transcripts(root):
        pcm, rate = read_wav(wav)
        if rate != SAMPLE_RATE:
            log.warning("%s: %d Hz, expected %d; skipped", wav, rate, SAMPLE_RATE)
            continue
        audio = as_float_mono(pcm)
        try:
            clips.append(RealClip(name, audio, align(audio, text).phones))
        except (UserError, RuntimeError) as e:
            log.warning("%s: not aligned (%s); skipped", name, e)
    return tuple(clips)


def real_validation_set(root: Path = TESTDATA_DIR) -> list[RealClip]:
    """Every aligned testdata utterance as (name, audio (N,) float32 16 kHz, phones). Validation only.

    Raises UserError when the Debian package is not installed (nothing found under `root`).
    """
    if not transcripts(root):
        raise UserError(f"no pocketsphinx test data under {root}: apt-get install pocketsphinx-testdata")
    return list(_validation_set(root))
