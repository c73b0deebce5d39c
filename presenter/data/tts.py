"""Speech with exact phoneme timing: espeak-ng through ctypes on `libespeak-ng.so.1`.

`synthesize(text, voice="en-us+f3", rate_wpm=175, pitch=50, seed=0)` returns an `Utterance`:
float32 mono audio at 16 kHz (espeak renders 22,050 Hz; we resample by exactly 320/441 with a
zero-phase polyphase filter, so a time in seconds means the same instant before and after)
and the phones that made it, each `(phone, start_s, end_s)`, contiguous from 0 to the end of
the audio. Phones are in the project's shared inventory (`presenter.motion.visemes.PHONES`,
ARPAbet-like, lower case, `sil` for pauses); espeak's own phoneme mnemonics are kept beside
them in `Utterance.espeak_phones`.

How the timing is obtained: espeak runs in synchronous mode and calls our callback with each
block of samples and the events inside it. PHONEME events (type 7) carry the sample offset at
which the phoneme starts, counted from the start of this `espeak_Synth` call (offsets restart
with every call, so one utterance is one call). A phoneme ends where the next one starts.

ctypes facts that matter (see DESIGN.md section 6):
- `espeak_EVENT` is 40 bytes: type, unique_identifier, text_position, length, audio_position,
  sample, user_data (8-byte pointer, at offset 24), then the `id` union at offset 32. For
  phoneme events `id.string` is a char[8] that may fill all 8 bytes with no NUL.
- The callback object must stay referenced for as long as espeak may call it (the engine
  object holds it for the process's lifetime), and it must return 0 (non-zero aborts synthesis).
- espeak is one global C state per process (voice, parameters, callback) and it carries
  state from one synthesis to the next (glottal phase, flutter, resonators, echo), so the same
  call would give slightly different samples depending on what was said before. Synthesis
  therefore runs in a helper process (`_Zygote`) that initialises espeak and never speaks:
  it forks one child per request, the child seeds C `rand()` (espeak's noise source) with
  `seed`, speaks once and exits. Audio is a function of the arguments alone, in any thread or
  worker process. `_LOCK` serialises a process's requests and its in-process espeak (used only
  to list voices); a forked worker starts its own helper on first use.
- Cost measured here: ~25 ms per short sentence (fork + voice load), ~400x real time on long
  text; the helper starts once per process (~1 s).

Voices: `voices()` lists the English accents espeak ships crossed with its voice variants
(timbres) minus effect variants (whisper, robots, long echoes). `HOLDOUT_LANGUAGES` and
`HOLDOUT_VARIANTS` name the voices kept out of training for validation: a voice is held out
when its accent or its variant is (`Voice.holdout`).

espeak phoneme names and the shared inventory (`ESPEAK_TO_PHONES`): espeak's English mnemonics
stand for different sounds in different accents. The table maps the American/British default;
`ACCENT_OVERRIDES` corrects the few that change the mouth (checked against espeak's own IPA
output for every accent over the sentence list), e.g. Lancashire and West Midlands 'V'
(strut) is [ʊ], so `uh` rather than `ah`. Rhotic accents split r-coloured vowels into vowel +
`r`. A mnemonic missing from the table is reduced by dropping espeak's suffix marks
(`t#` -> `t`); a name still unknown maps to `hh`, the phone that takes its neighbours' mouth
shape, with one warning.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import json
import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from presenter.errors import UserError
from presenter.motion.visemes import PHONES

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000            # Hz, what every consumer of the corpus reads
ESPEAK_RATE = 22050            # Hz, what espeak-ng renders
_UP, _DOWN = 320, 441          # 16000 / 22050 in lowest terms

RATE_WPM_RANGE = (80, 450)     # espeak's accepted speaking rates, words per minute
PITCH_RANGE = (0, 100)         # espeak's base pitch scale (50 = the voice's default)
# What `draw_speaker` samples for the corpus: natural speaking rates and moderate pitch shifts.
CORPUS_RATE_WPM = (130, 230)
CORPUS_PITCH = (25, 75)
CORPUS_PITCH_RANGE = (30, 80)

HOLDOUT_LANGUAGES = ("en-gb-scotland",)
HOLDOUT_VARIANTS = ("f4", "m7", "klatt4", "Annie")

# Variants that are effects rather than voices: unvoiced (whisper), robotic, long echoes, or
# espeak's own test settings. They stay out of the corpus.
EXCLUDED_VARIANTS = frozenset({
    "whisper", "whisperf", "caleb",                     # no voicing
    "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5", "robosoft6", "robosoft7",
    "robosoft8", "UniRobot", "anikaRobot", "Demonic", "announcer", "croak",
    "RicishayMax", "RicishayMax2", "RicishayMax3",       # echo of 0.5-10 s
    "fast",                                               # espeak's speed test
})

# espeak en mnemonic -> shared phones. Multi-phone values split the segment evenly.
ESPEAK_TO_PHONES: dict[str, tuple[str, ...]] = {
    # pauses
    "_": ("sil",), "_:": ("sil",), "_!": ("sil",), "_|": ("sil",),
    # vowels
    "0": ("aa",), "A:": ("aa",), "A@": ("aa",), "aa": ("ae",), "a": ("ae",),
    "a#": ("ah",), "V": ("ah",), "@": ("ah",), "@2": ("ah",), "@5": ("ah",), "@-": ("ah",),
    "3": ("er",), "3:": ("er",), "VR": ("er",), "IR": ("er",), "@L": ("ah", "l"),
    "E": ("eh",), "e@": ("eh",), "eI": ("ey",),
    "I": ("ih",), "I#": ("ih",), "I2": ("ih",), "i@": ("ih", "ah"), "i@3": ("ih", "ah"),
    "i": ("iy",), "i:": ("iy",),
    "O:": ("ao",), "O2": ("ao",), "O@": ("ao",), "o@": ("ao",), "OI": ("oy",),
    "U": ("uh",), "U@": ("uh", "ah"), "u:": ("uw",), "oU": ("ow",),
    "aI": ("ay",), "aI2": ("ay",), "aI@": ("ay", "ah"), "aI3": ("ay", "er"), "aU": ("aw",),
    # consonants
    "p": ("p",), "b": ("b",), "m": ("m",), "f": ("f",), "v": ("v",),
    "T": ("th",), "D": ("dh",), "t": ("t",), "d": ("d",), "n": ("n",), "l": ("l",),
    "s": ("s",), "z": ("z",), "S": ("sh",), "Z": ("zh",), "tS": ("ch",), "dZ": ("jh",),
    "k": ("k",), "g": ("g",), "N": ("ng",), "x": ("k",), "h": ("hh",), "?": ("hh",),
    "r": ("r",), "r-": ("r",), "w": ("w",), "w#": ("w",), "j": ("y",),
    "t#": ("t",), "t2": ("t",), "t[": ("t",), "n-": ("n",), "l/": ("l",),
    ";": ("y",),                 # espeak's linking glide between vowels ("Bobby ate")
}

# Where an accent realises a mnemonic with another mouth shape (from espeak's IPA output).
ACCENT_OVERRIDES: dict[str, dict[str, tuple[str, ...]]] = {
    "en-gb-x-gbclan": {"V": ("uh",)},
    "en-gb-x-gbcwmd": {"V": ("uh",), "aI": ("oy",), "i:": ("ey",), "e@": ("er",)},
    "en-gb-scotland": {"3:": ("eh",), "i": ("ey",), "e@": ("eh",), "A@": ("aa", "r"),
                       "O@": ("ao", "r"), "U@": ("uw", "r")},
    "en-gb-x-rp": {"U@": ("ao",), "aa": ("aa",)},
    "en-us": {"A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ow", "r"), "e@": ("eh", "r"),
              "i@3": ("ih", "r"), "U@": ("uh", "r")},
}

_SUFFIX_MARKS = "#-:;[/!|23"

# espeak-ng API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),   # ms
        ("sample", ctypes.c_int),           # samples at 22,050 Hz since this espeak_Synth began
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),          # union; phoneme name, not always NUL-terminated
    ]


assert ctypes.sizeof(_Event) == 40 and _Event.id.offset == 32, "espeak_EVENT layout changed"


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),     # (priority byte, NUL-terminated language)*, then 0
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Voice:
    """One espeak voice: an English accent (`language`, e.g. 'en-us') and a variant ('f3')."""

    language: str
    variant: str

    @property
    def name(self) -> str:
        """The name espeak_SetVoiceByName takes: 'en-us+f3'."""
        return f"{self.language}+{self.variant}"

    @property
    def holdout(self) -> bool:
        """True for voices kept out of training (validation only)."""
        return self.language in HOLDOUT_LANGUAGES or self.variant in HOLDOUT_VARIANTS


@dataclass
class Utterance:
    """Synthesised speech and its timing.

    audio: (N,) float32 in [-1, 1] at `SAMPLE_RATE`.
    phones: [(phone, start_s, end_s)], shared inventory, contiguous, covering [0, N / SAMPLE_RATE].
    espeak_phones: [(mnemonic, start_s, end_s)], espeak's own names, zero-length events dropped.
    """

    audio: np.ndarray
    phones: list[tuple[str, float, float]]
    espeak_phones: list[tuple[str, float, float]] = field(default_factory=list)
    voice: Voice | None = None
    rate_wpm: int = 175
    pitch: int = 50
    seed: int = 0

    @property
    def duration_s(self) -> float:
        return len(self.audio) / SAMPLE_RATE


class _Engine:
    """espeak in this process: library handle, callback, and the buffers of one synthesis."""

    def __init__(self) -> None:
        path = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as e:
            raise UserError(f"cannot load {path} ({e}); install Debian's libespeak-ng1") from e
        self.libc = ctypes.CDLL(None)       # espeak draws its noise from the C library's rand()
        self.lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        self.lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                          ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                          ctypes.c_void_p, ctypes.c_void_p]
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                          _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {ESPEAK_RATE} Hz")
        self.chunks: list[bytes] = []
        self.events: list[tuple[str, int]] = []
        self._callback = _Callback(self._on_synth)   # referenced for the process's lifetime
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, n_samples, events) -> int:  # noqa: ANN001 (ctypes pointers)
        if n_samples > 0:
            self.chunks.append(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                name = bytes(ev.id).split(b"\0", 1)[0].decode("ascii", "replace")
                self.events.append((name, ev.sample))
            i += 1
        return 0

    def speak(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int,
              seed: int) -> tuple[bytes, list[tuple[str, int]]]:
        """int16 samples at 22,050 Hz (as bytes) and PHONEME events [(name, start sample)]."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UserError(f"espeak has no voice {voice!r}; see presenter.data.tts.voices()")
        for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range),
                             (_PARAM_VOLUME, 100)):
            self.lib.espeak_SetParameter(param, value, 0)
        self.libc.srand(seed & 0xFFFFFFFF)
        self.chunks, self.events = [], []
        data = text.encode("utf-8")
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with error {err} on {text!r}")
        return b"".join(self.chunks), self.events

    def list_voices(self, spec: bytes | None) -> list[str]:
        """Identifiers ('gmw/en-US', '!v/f3') of the voices matching `spec` (None = all)."""
        req, buf = None, None            # buf owns the spec's bytes until the call returns
        if spec is not None:
            buf = ctypes.create_string_buffer(spec)
            req = _Voice(languages=ctypes.cast(buf, ctypes.c_void_p))
        arr = self.lib.espeak_ListVoices(ctypes.byref(req) if req is not None else None)
        out, i = [], 0
        while arr[i]:
            out.append(arr[i].contents.identifier.decode())
            i += 1
        return out


def _zygote_main() -> None:
    """Serve synthesis requests on stdin/stdout, one forked child per request (see `_Zygote`)."""
    engine = _Engine()                       # initialised here, never speaks here
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                         # the child: pristine espeak, speaks once, exits
            os.close(r)
            try:
                audio, events = engine.speak(**json.loads(line))
                reply = json.dumps({"ok": True, "n_bytes": len(audio), "events": events}).encode()
            except Exception as e:  # noqa: BLE001 (reported to the caller, who raises it)
                audio, reply = b"", json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}).encode()
            with os.fdopen(w, "wb") as f:
                f.write(reply + b"\n" + audio)
            os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if status != 0 or b"\n" not in data:
            data = json.dumps({"ok": False, "error": f"synthesis child died (status {status})"}).encode() + b"\n"
        out.write(data)
        out.flush()


class _Zygote:
    """A helper process that has initialised espeak but never spoken; it forks one child per request.

    espeak keeps state between syntheses (glottal phase, flutter, resonators, echo), so the same
    call gives slightly different samples depending on what the process said before. A child
    forked from a process that never spoke starts from the same state every time, so audio is a
    function of the arguments and the seed alone. The helper is single-threaded, which keeps
    fork safe even when the caller runs threads. Cost: ~10-30 ms per call (fork, voice load).
    """

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.owner = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from presenter.data.tts import _zygote_main; _zygote_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def request(self, **req: object) -> tuple[bytes, list[tuple[str, int]]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline() or b'{"ok": false, "error": "helper exited"}')
        except BrokenPipeError:
            reply = {"ok": False, "error": "helper exited"}
        if not reply["ok"]:
            if reply["error"].startswith("UserError: "):
                raise UserError(reply["error"][len("UserError: "):])
            raise RuntimeError(f"espeak helper: {reply['error']}")
        audio = self.proc.stdout.read(reply["n_bytes"])
        return audio, [(name, int(sample)) for name, sample in reply["events"]]

    def close(self) -> None:
        if self.owner == os.getpid() and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_LOCK = threading.Lock()          # guards this process's espeak state and its helper's pipe
_ENGINE: _Engine | None = None
_ZYGOTES: dict[int, _Zygote] = {}   # by owning pid: a forked child starts its own


def _reset_after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _close_helpers() -> None:
    for z in _ZYGOTES.values():
        z.close()


def _engine() -> _Engine:
    """This process's espeak (for listing voices; it never speaks); call with _LOCK held."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def _zygote() -> _Zygote:
    """This process's synthesis helper; call with _LOCK held."""
    z = _ZYGOTES.get(os.getpid())
    if z is None or z.proc.poll() is not None:
        z = _ZYGOTES[os.getpid()] = _Zygote()
    return z


@lru_cache(maxsize=1)
def languages() -> tuple[str, ...]:
    """The English accents espeak ships, as names espeak_SetVoiceByName takes ('en-us', ...)."""
    with _LOCK:
        names = sorted({ident.split("/")[-1].lower() for ident in _engine().list_voices(None)})
    return tuple(n for n in names if n == "en" or n.startswith("en-"))


@lru_cache(maxsize=1)
def variants() -> tuple[str, ...]:
    """espeak's voice variants (timbres) usable for speech, without `EXCLUDED_VARIANTS`."""
    with _LOCK:
        names = sorted({ident.split("/")[-1] for ident in _engine().list_voices(b"variant")})
    return tuple(n for n in names if n not in EXCLUDED_VARIANTS and " " not in n)


def voices(*, holdout: bool | None = None) -> list[Voice]:
    """English voices = accents x variants. holdout: None for all, True/False for one split."""
    out = [Voice(lang, var) for lang in languages() for var in variants()]
    return [v for v in out if holdout is None or v.holdout == holdout]


def draw_speaker(rng: np.random.Generator, *, holdout: bool = False) -> dict:
    """Keyword arguments for `synthesize` drawn from the training (or held-out) voices and the
    CORPUS_* ranges: voice, rate_wpm, pitch, pitch_range, seed."""
    pool = voices(holdout=holdout)
    return {
        "voice": pool[int(rng.integers(len(pool)))],
        "rate_wpm": int(rng.integers(CORPUS_RATE_WPM[0], CORPUS_RATE_WPM[1] + 1)),
        "pitch": int(rng.integers(CORPUS_PITCH[0], CORPUS_PITCH[1] + 1)),
        "pitch_range": int(rng.integers(CORPUS_PITCH_RANGE[0], CORPUS_PITCH_RANGE[1] + 1)),
        "seed": int(rng.integers(2 ** 31)),
    }


def to_phones(name: str, language: str = "en-us") -> tuple[str, ...]:
    """Shared-inventory phones for one espeak mnemonic spoken in `language` (see module doc)."""
    override = ACCENT_OVERRIDES.get(language, {})
    key = name
    while key:
        if key in override:
            return override[key]
        if key in ESPEAK_TO_PHONES:
            return ESPEAK_TO_PHONES[key]
        if key[-1] not in _SUFFIX_MARKS:
            break
        key = key[:-1]
    _warn_unknown(name)
    return ("hh",)


@lru_cache(maxsize=None)
def _warn_unknown(name: str) -> None:
    log.warning("espeak phoneme %r is not in ESPEAK_TO_PHONES; using 'hh' (neighbours' shape)", name)


def synthesize(text: str, *, voice: Voice | str = Voice("en-us", "f3"), rate_wpm: int = 175,
               pitch: int = 50, pitch_range: int = 50, seed: int = 0) -> Utterance:
    """Speak `text` and return its 16 kHz audio with phone timings.

    voice: a `Voice` or an espeak name ('en-us+f3'); rate_wpm: words per minute, 80..450;
    pitch: base pitch 0..100 (50 = the voice's own); pitch_range: intonation range 0..100;
    seed: seeds the noise of fricatives and breath. The same arguments give the same samples,
    in any thread or process (see `_Zygote`).
    """
    if isinstance(voice, str):
        lang, _, var = voice.partition("+")
        voice = Voice(lang, var)
    if not RATE_WPM_RANGE[0] <= rate_wpm <= RATE_WPM_RANGE[1]:
        raise UserError(f"rate_wpm={rate_wpm} is outside {RATE_WPM_RANGE}")
    for name, value in (("pitch", pitch), ("pitch_range", pitch_range)):
        if not PITCH_RANGE[0] <= value <= PITCH_RANGE[1]:
            raise UserError(f"{name}={value} is outside {PITCH_RANGE}")
    with _LOCK:
        raw, events = _zygote().request(text=text, voice=voice.name if voice.variant else voice.language,
                                        rate=int(rate_wpm), pitch=int(pitch), pitch_range=int(pitch_range),
                                        seed=int(seed))
    samples = np.frombuffer(raw, "<i2")
    audio = resample_to_16k(samples)
    espeak_phones = _segments(events, len(samples) / ESPEAK_RATE, len(audio) / SAMPLE_RATE)
    phones = _shared_phones(espeak_phones, voice.language, len(audio) / SAMPLE_RATE)
    return Utterance(audio, phones, espeak_phones, voice, rate_wpm, pitch, seed)


def resample_to_16k(raw: np.ndarray) -> np.ndarray:
    """espeak's int16 samples at 22,050 Hz (n,) -> float32 at 16 kHz, ceil(n * 320 / 441) samples.

    Polyphase filtering with a symmetric FIR (zero phase): sample k of the output is at
    k / 16000 s, exactly the instant of input sample k * 441 / 320, so phone times carry over.
    """
    x = np.asarray(raw, np.float32) / 32768.0
    return np.clip(resample_poly(x, _UP, _DOWN), -1.0, 1.0).astype(np.float32)


def _segments(events: list[tuple[str, int]], raw_s: float, out_s: float) -> list[tuple[str, float, float]]:
    """PHONEME events (name, start sample) -> [(name, start_s, end_s)] without empty segments."""
    out = []
    for k, (name, sample) in enumerate(events):
        start = sample / ESPEAK_RATE
        end = events[k + 1][1] / ESPEAK_RATE if k + 1 < len(events) else raw_s
        start, end = min(start, out_s), min(end, out_s)
        if end > start:
            out.append((name, start, end))
    return out


def _shared_phones(segs: list[tuple[str, float, float]], language: str,
                   total_s: float) -> list[tuple[str, float, float]]:
    """espeak segments -> contiguous shared phones over [0, total_s], adjacent pauses merged."""
    out: list[tuple[str, float, float]] = []

    def add(phone: str, start: float, end: float) -> None:
        if out and out[-1][0] == phone == "sil":
            out[-1] = ("sil", out[-1][1], end)
        elif end > start:
            out.append((phone, start, end))

    cursor = 0.0
    for name, start, end in segs:
        add("sil", cursor, start)            # before the first phoneme, or a gap
        parts = to_phones(name, language)
        step = (end - start) / len(parts)
        for k, p in enumerate(parts):
            add(p, start + k * step, end if k == len(parts) - 1 else start + (k + 1) * step)
        cursor = end
    add("sil", cursor, total_s)
    assert all(p in PHONES for p, _, _ in out), "phone outside the shared inventory"
    return out
