"""English text for the synthetic speech corpus, and how well it covers the phone inventory.

Source: every sentence and word list here was written by the presenter project for this
purpose (no third-party text). `sentences()` reads `sentences.txt` (about 280 hand-written
sentences, rich in bilabials p/b/m, open and rounded vowels, f/v, th, sibilants, and
punctuation that makes pauses); `generated(n, seed=...)` assembles any number of further
sentences from templates and word lists chosen for the same sounds. `coverage(texts)`
synthesises the texts and counts the shared-inventory phones they produce.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

from presenter.data.tts import Voice, synthesize
from presenter.motion.visemes import PHONES

_SUBJECTS = (
    "The man", "My mother", "A small boy", "Paul", "The farmer", "Our teacher", "Bob", "The old woman",
    "Martha", "Father", "The cook", "Vivian", "Thomas", "A young vet", "The pupil", "Maggie",
    "The plumber", "Your brother", "The baby", "Oliver", "June", "The author", "A tall sailor",
)
_VERBS = (
    "bought", "found", "saw", "moved", "washed", "brought", "thought about", "painted", "shaped",
    "loved", "watched", "pushed", "bumped into", "threw", "chose", "fixed", "opened", "polished",
    "borrowed", "measured", "forgot", "grabbed", "showed us", "remembered",
)
_OBJECTS = (
    "a big blue box", "the warm wool coat", "five ripe plums", "the heavy oak table", "three thin maps",
    "a map of the moon", "the purple umbrella", "some fresh fish", "the yellow boat", "a jar of jam",
    "the broken mop", "a pair of smooth shoes", "the vase of violets", "both of the bottles",
    "the large brown dog", "an old photo", "the pot of soup", "a bunch of bananas", "the tool box",
    "the father's watch", "a cup of hot cocoa", "the map of the harbour", "my favourite book",
)
_ENDINGS = (
    ".", " by the pond.", ", and then went home.", " on Monday morning.", " with a smile.",
    "? Maybe not.", ", but why?", " last autumn.", " in the garage.", "... and that was all.",
    " before the bus came.", ". Wow!", ", of course.", " at about half past two.", ", I suppose.",
)


@lru_cache(maxsize=1)
def sentences() -> tuple[str, ...]:
    """The hand-written sentences of `sentences.txt`, in file order."""
    text = resources.files("presenter.data").joinpath("sentences.txt").read_text("utf-8")
    return tuple(s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#"))


def generated(n: int, *, seed: int = 0) -> list[str]:
    """`n` template sentences (subject verb object ending), the same list for the same seed."""
    rng = np.random.default_rng(seed)
    parts = (_SUBJECTS, _VERBS, _OBJECTS, _ENDINGS)
    out = []
    for _ in range(n):
        subj, verb, obj, end = (p[int(rng.integers(len(p)))] for p in parts)
        out.append(f"{subj} {verb} {obj}{end}")
    return out


@dataclass(frozen=True)
class Coverage:
    """Phone statistics of a text set as one voice speaks it."""

    counts: dict[str, int]          # phone -> number of segments, over the shared inventory
    seconds: dict[str, float]       # phone -> total duration, s
    diphones: int                   # distinct ordered phone pairs met (speech phones only)
    audio_s: float                  # total audio

    @property
    def missing(self) -> tuple[str, ...]:
        """Inventory phones that never occur."""
        return tuple(p for p in PHONES if self.counts.get(p, 0) == 0)

    def summary(self) -> str:
        """One line: phones covered, rarest phones, diphones, audio length."""
        speech = [p for p in PHONES if p != "sil"]
        rare = sorted(speech, key=lambda p: self.counts.get(p, 0))[:5]
        return (f"{len(speech) - len([p for p in self.missing if p != 'sil'])}/{len(speech)} phones, "
                f"rarest {', '.join(f'{p}={self.counts.get(p, 0)}' for p in rare)}; "
                f"{self.diphones} diphones; {self.audio_s:.0f} s of audio")


def coverage(texts: list[str] | tuple[str, ...], *, voice: Voice | str = Voice("en-us", "m3")) -> Coverage:
    """Synthesise `texts` with `voice` and count the phones (and diphones) they produce."""
    counts: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    pairs: set[tuple[str, str]] = set()
    audio_s = 0.0
    for text in texts:
        utt = synthesize(text, voice=voice)
        audio_s += utt.duration_s
        names = [p for p, _, _ in utt.phones]
        for p, s, e in utt.phones:
            counts[p] += 1
            seconds[p] += e - s
        pairs.update((a, b) for a, b in zip(names, names[1:]) if "sil" not in (a, b))
    return Coverage(dict(counts), dict(seconds), len(pairs), audio_s)
