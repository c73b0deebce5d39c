"""The loudness baseline (no learning): mouth poses from how loud and how hissy the speech is.

No model, no training data: a stand-in that exercises the live path until the SyncFormer lands,
and a floor that any learned driver must beat. Per 40 ms frame, over an 80 ms window centred
on the frame (so 20 ms of look-ahead):

- jaw: the frame's RMS level against a running speech peak (30 dB range, nothing below -55 dBFS),
  gated by webrtcvad,
  fast to open (20 ms) and slower to close (60 ms);
- spread and teeth: the share of energy above 3 kHz (fricatives s, sh, f: lips spread, teeth show);
- round: a low spectral centroid in voiced speech (oo, w);
- close: deep dips of level inside speech (stop closures: p, b, m);
- outside speech every parameter is exactly 0, the rest pose, so the idle frame shows as is.

It cannot know the vowel or the place of articulation: lips open with loudness, not with phonemes.
"""
from __future__ import annotations

import numpy as np

from presenter.audio.vad import FRAME_MS as VAD_FRAME_MS
from presenter.audio.vad import Vad
from presenter.motion.base import FRAME_SAMPLES, SAMPLE_RATE, empty_poses
from presenter.motion.mouth import CLOSE, JAW, N_PARAMS, ROUND, SPREAD, TEETH, TONGUE

LOOKAHEAD = FRAME_SAMPLES // 2           # 320 samples = 20 ms beyond the frame's end
WINDOW = FRAME_SAMPLES + 2 * LOOKAHEAD   # 1280 samples = 80 ms centred on the frame
VAD_SAMPLES = SAMPLE_RATE * VAD_FRAME_MS // 1000
RANGE_DB = 30.0            # jaw goes from shut to fully open over this many dB below the speech peak
PEAK_DECAY_DB_S = 3.0      # the running speech peak falls this fast while the level stays below it
PEAK_FLOOR_DB = -30.0      # the peak never falls under this (keeps faint noise from opening the jaw)
SILENCE_DB = -55.0         # levels below this never open the jaw
ATTACK_S, RELEASE_S = 0.02, 0.06
SMOOTH_S = 0.04            # shape parameters (spread, round, teeth, tongue, close)
REST_JAW = 0.03            # below this, outside speech, the pose snaps to exactly rest
JAW_MAX = 0.65            # the loudest speech opens the jaw this far (1 = 2.2 cm: reads as a shout)


def _alpha(tau_s: float) -> float:
    """One-pole smoothing factor per 40 ms frame for time constant tau_s."""
    return float(1.0 - np.exp(-(FRAME_SAMPLES / SAMPLE_RATE) / tau_s))


class LoudnessDriver:
    """MouthDriver from loudness and spectral shape; see the module docstring."""

    name = "loudness baseline (no learning)"
    label = "mouth: loudness baseline, no learning"
    lookahead_s = LOOKAHEAD / SAMPLE_RATE
    compute_s = 0.0            # ~0.1 ms a frame

    def __init__(self, *, vad_mode: int = 2) -> None:
        self._vad = Vad(mode=vad_mode)
        freqs = np.fft.rfftfreq(WINDOW, 1.0 / SAMPLE_RATE)
        self._band = (freqs >= 100) & (freqs <= 7500)
        self._high = freqs >= 3000
        self._freqs = freqs
        self._hann = np.hanning(WINDOW).astype(np.float32)
        self.reset()

    def skip(self, n_frames: int) -> None:
        """Computed poses cost ~0.1 ms a frame: nothing worth skipping."""

    def reset(self) -> None:
        self._vad.reset()
        self._buf = np.zeros(LOOKAHEAD, np.float32)   # silence before the first frame's window
        self._buf_start = -LOOKAHEAD                  # absolute sample index of _buf[0]
        self._fed = 0                                 # samples pushed so far
        self._next = 0                                # next frame to return
        self._speech: list[bool] = []                 # VAD decisions per 20 ms, from _speech_base on
        self._speech_base = 0
        self._peak_db = PEAK_FLOOR_DB
        self._pose = np.zeros(N_PARAMS, np.float32)

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32).reshape(-1)
        self._append(audio)
        return self._emit(limit=self._fed - LOOKAHEAD)

    def flush(self) -> np.ndarray:
        pad = (-self._fed) % FRAME_SAMPLES
        self._append(np.zeros(pad, np.float32))       # the partial frame's tail is real silence
        return self._emit(limit=self._fed)

    def _append(self, audio: np.ndarray) -> None:
        self._buf = np.concatenate([self._buf, audio])
        self._fed += len(audio)
        self._speech.extend(self._vad.push(audio).tolist())

    def _emit(self, limit: int) -> np.ndarray:
        """Poses of every frame whose end is at or before sample `limit`."""
        poses = []
        while (self._next + 1) * FRAME_SAMPLES <= limit:
            poses.append(self._frame(self._next))
            self._next += 1
        # Keep only what the next frame's window can still reach.
        keep_from = self._next * FRAME_SAMPLES - LOOKAHEAD
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        drop = max(0, keep_from // VAD_SAMPLES - self._speech_base)
        if drop:
            del self._speech[:drop]
            self._speech_base += drop
        return np.stack(poses) if poses else empty_poses()

    def _window(self, k: int) -> np.ndarray:
        start = k * FRAME_SAMPLES - LOOKAHEAD - self._buf_start
        w = self._buf[start:start + WINDOW]
        return np.pad(w, (0, WINDOW - len(w)))         # look-ahead beyond a flush is silence

    def _is_speech(self, k: int) -> bool:
        # VAD frames overlapping the analysis window; ones not decided yet (after a flush) are silence.
        lo = max(0, (k * FRAME_SAMPLES - LOOKAHEAD) // VAD_SAMPLES - self._speech_base)
        hi = (k * FRAME_SAMPLES + FRAME_SAMPLES + LOOKAHEAD) // VAD_SAMPLES - self._speech_base
        return any(self._speech[lo:hi])

    def _frame(self, k: int) -> np.ndarray:
        w = self._window(k)
        level_db = 10.0 * np.log10(float(np.mean(w * w)) + 1e-10)
        speech = self._is_speech(k)
        if speech:
            self._peak_db = max(level_db, self._peak_db - PEAK_DECAY_DB_S * FRAME_SAMPLES / SAMPLE_RATE,
                                PEAK_FLOOR_DB)
        target = np.zeros(N_PARAMS, np.float32)
        if speech:
            spec = np.abs(np.fft.rfft(w * self._hann)) ** 2
            total = float(spec[self._band].sum()) + 1e-12
            hiss = float(spec[self._band & self._high].sum()) / total                 # 0..1
            centroid = float((spec[self._band] * self._freqs[self._band]).sum()) / total  # Hz
            lo = max(self._peak_db - RANGE_DB, SILENCE_DB)
            open_ = float(np.clip((level_db - lo) / (self._peak_db - lo), 0.0, 1.0)) ** 1.3
            fric = float(np.clip((hiss - 0.2) / 0.4, 0.0, 1.0))
            rnd = float(np.clip((900.0 - centroid) / 500.0, 0.0, 1.0)) * (1.0 - fric) * min(1.0, 4 * open_)
            target[JAW] = JAW_MAX * open_ * (1.0 - 0.5 * fric)
            target[SPREAD] = 0.7 * fric - 0.5 * rnd
            target[ROUND] = 0.6 * rnd
            target[TEETH] = np.clip(0.4 * open_ + 0.8 * fric, 0.0, 1.0)
            target[TONGUE] = 0.3 * open_ * (1.0 - fric)
            target[CLOSE] = 0.8 * float(np.clip((self._peak_db - 22.0 - level_db) / 10.0, 0.0, 1.0))
        a_jaw = _alpha(ATTACK_S) if target[JAW] > self._pose[JAW] else _alpha(RELEASE_S)
        a = np.full(N_PARAMS, _alpha(SMOOTH_S), np.float32)
        a[JAW] = a_jaw
        self._pose = self._pose + a * (target - self._pose)
        if not speech and self._pose[JAW] < REST_JAW:
            self._pose[:] = 0.0
        return self._pose.copy()
