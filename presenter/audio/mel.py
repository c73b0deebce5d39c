"""Whisper's log-mel front end in numpy: 16 kHz audio (S,) -> log-mel (80, S // 160).

The same steps as openai-whisper's `log_mel_spectrogram` (and faster-whisper's
`FeatureExtractor` with `padding=0`): a periodic Hann window of 400 samples, hop 160, the
signal reflect-padded by 200 at both ends (`center=True`), the last STFT frame dropped, power
spectrum, a Slaney-style mel filterbank (librosa's `filters.mel(sr=16000, n_fft=400,
n_mels=80)`, computed here, no file), log10 clamped at 1e-10, a dynamic range of 8 below the
input's maximum, then `(x + 4) / 4`.

The maximum is taken over the whole input, so a log-mel depends on every sample it is computed
from: `presenter.audio.features` therefore computes it per fixed-length window.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000   # Hz
N_FFT = 400           # samples: 25 ms window
HOP = 160             # samples: 10 ms, so 100 mel frames per second
N_MELS = 80


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep,
                    f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=None)
def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Slaney-normalised triangular mel filterbank (n_mels, n_fft // 2 + 1), float32, read-only."""
    fft_hz = np.fft.rfftfreq(n_fft, d=1.0 / sr)                                   # (K,)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))  # (M + 2,)
    widths = np.diff(edges_hz)                                                    # (M + 1,)
    ramps = edges_hz[:, None] - fft_hz[None, :]                                   # (M + 2, K)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))                        # (M, K)
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]                    # equal area per band
    out = weights.astype(np.float32)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=None)
def _hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window, as torch.hann_window(n_fft)."""
    w = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    w.flags.writeable = False
    return w


def power_mel(audio: np.ndarray) -> np.ndarray:
    """Audio (..., S) float, 16 kHz -> mel power (..., 80, S // 160), float32, before the log."""
    audio = np.asarray(audio, dtype=np.float32)
    S = audio.shape[-1]
    if S < N_FFT // 2 + 1:
        raise ValueError(f"log-mel needs at least {N_FFT // 2 + 1} samples for reflect padding, got {S}")
    pad = [(0, 0)] * (audio.ndim - 1) + [(N_FFT // 2, N_FFT // 2)]
    x = np.pad(audio, pad, mode="reflect")
    n_frames = S // HOP                                            # the STFT's last frame is dropped
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=-1)[..., : n_frames * HOP : HOP, :]
    return frames_power_mel(frames)


def frames_power_mel(frames: np.ndarray) -> np.ndarray:
    """STFT frames (..., T, 400) of raw samples -> mel power (..., 80, T), float32."""
    spec = np.fft.rfft(frames * _hann(N_FFT), axis=-1)             # (..., T, K) complex
    power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)   # (..., T, K)
    return np.swapaxes(power @ mel_filters().T, -1, -2)            # (..., 80, T)


def normalise_log_mel(power: np.ndarray) -> np.ndarray:
    """Mel power (..., 80, T) -> Whisper log-mel, each item on its own maximum."""
    log_spec = np.log10(np.maximum(power, 1e-10))
    peak = log_spec.max(axis=(-2, -1), keepdims=True)
    return np.ascontiguousarray((np.maximum(log_spec, peak - 8.0) + 4.0) / 4.0, dtype=np.float32)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """Audio (S,) or (B, S) float, 16 kHz -> Whisper log-mel (80, S // 160) or (B, 80, S // 160).

    Each item is normalised on its own maximum (Whisper normalises one clip at a time).
    """
    return normalise_log_mel(power_mel(audio))
