"""Make clean synthetic speech sound like a microphone through WebRTC, without moving it in time.

Every step keeps sample k at time k / sr, so phone timings stay exact:
- `add_noise`: coloured noise (white, pink, brown) scaled to a signal-to-noise ratio, with
  SNR = 10 log10(mean(x^2) / mean(noise^2)) over the whole clip.
- `reverb`: a synthetic room impulse response, a unit direct path at t = 0 followed (after a
  few ms) by exponentially decaying noise reaching -60 dB at `rt60_s`, scaled to a
  direct-to-reverberant ratio; causal convolution, output cut to the input length. The
  direct path at lag 0 is the largest tap, so nothing is delayed.
- `band_limit`: a Butterworth band-pass run forwards and backwards (zero phase).
- `gain`: a level change in dB with hard clipping at full scale (a hot microphone).
- `opus_roundtrip`: upsample to 48 kHz, encode with libopus (PyAV, 20 ms frames), decode, and
  downsample back. Opus delays its output by the pre-skip in its header (312 samples at
  48 kHz for libopus); we drop exactly the samples the decoder adds beyond the input, so the
  round trip is sample-aligned (cross-correlation peak within a few 48 kHz samples).
Rate changes use polyphase resampling with a symmetric (zero-phase) filter for the same
reason.

`augment(audio, seed=...)` draws a random chain of these from `AugmentConfig` with a
`numpy.random.Generator` seeded by `seed`: the same seed gives the same output.

Legend: N samples, float32 mono at `sr` (16 kHz unless stated).
"""
from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

from presenter.errors import UserError

SAMPLE_RATE = 16000
OPUS_RATE = 48000
OPUS_FRAME = 960                 # samples at 48 kHz: 20 ms, what WebRTC sends
NOISE_COLOURS = {"white": 0.0, "pink": 1.0, "brown": 2.0}   # spectral slope: power ~ 1 / f^a
BANDS_HZ = {"telephone": (300.0, 3400.0), "laptop": (120.0, 7000.0), "headset": (80.0, 7600.0)}


def _check(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, np.float32)
    if x.ndim != 1:
        raise UserError(f"audio has shape {x.shape}: expected mono (N,)")
    return x


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """(n,) float32 noise with unit mean power and the spectral slope of `colour`."""
    if colour not in NOISE_COLOURS:
        raise UserError(f"noise colour {colour!r} is not one of {sorted(NOISE_COLOURS)}")
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-NOISE_COLOURS[colour] / 2)
    spec[0] = 0.0                                       # no DC offset
    noise = np.fft.irfft(spec, n)
    return (noise / np.sqrt(np.mean(noise ** 2) + 1e-20)).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, *, colour: str = "white") -> np.ndarray:
    """audio (N,) + noise at `snr_db` (clip-wide power ratio, dB)."""
    x = _check(audio)
    p_signal = float(np.mean(x.astype(np.float64) ** 2))
    if p_signal == 0.0:
        return x.copy()
    noise = coloured_noise(len(x), colour, rng) * np.sqrt(p_signal / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def room_impulse_response(rt60_s: float, drr_db: float, rng: np.random.Generator, *,
                          sr: int = SAMPLE_RATE, predelay_s: float = 0.003) -> np.ndarray:
    """(L,) impulse response: 1 at t=0, then a decaying noise tail with direct/reverb ratio `drr_db`."""
    n = max(int(rt60_s * sr), 2)
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-np.log(1000.0) * t / rt60_s)   # -60 dB at rt60
    tail[: int(predelay_s * sr) + 1] = 0.0
    tail *= np.sqrt(10 ** (-drr_db / 10) / (np.sum(tail ** 2) + 1e-20))
    tail[0] = 1.0                                                         # the direct path
    return tail.astype(np.float32)


def reverb(audio: np.ndarray, rt60_s: float, drr_db: float, rng: np.random.Generator, *,
           sr: int = SAMPLE_RATE) -> np.ndarray:
    """audio (N,) in a synthetic room (reverberation time `rt60_s`, direct/reverb ratio `drr_db`)."""
    x = _check(audio)
    h = room_impulse_response(rt60_s, drr_db, rng, sr=sr)
    return fftconvolve(x, h)[: len(x)].astype(np.float32)


def band_limit(audio: np.ndarray, low_hz: float, high_hz: float, *, sr: int = SAMPLE_RATE,
               order: int = 4) -> np.ndarray:
    """audio (N,) through a zero-phase band-pass low_hz..high_hz (high clamped below Nyquist)."""
    x = _check(audio)
    high_hz = min(high_hz, 0.475 * sr)
    if not 0 < low_hz < high_hz:
        raise UserError(f"band {low_hz}..{high_hz} Hz is empty at {sr} Hz")
    sos = butter(order, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def gain(audio: np.ndarray, db: float) -> np.ndarray:
    """audio (N,) scaled by `db` and clipped to [-1, 1]."""
    return np.clip(_check(audio) * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)


def _opus_head_preskip(extradata: bytes | None) -> int:
    """Pre-skip (48 kHz samples) from an OpusHead header; 0 when absent."""
    if extradata and extradata[:8] == b"OpusHead" and len(extradata) >= 12:
        return int.from_bytes(extradata[10:12], "little")
    return 0


def opus_roundtrip(audio: np.ndarray, bitrate: int = 32000, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """audio (N,) at sr -> Opus at `bitrate` bit/s (48 kHz, 20 ms frames) -> (N,) at sr, aligned."""
    x = _check(audio)
    if OPUS_RATE % sr:
        raise UserError(f"sample rate {sr} Hz does not divide {OPUS_RATE} Hz")
    up = OPUS_RATE // sr
    x48 = resample_poly(x, up, 1).astype(np.float32)
    n = len(x48)
    padded = np.zeros(n + (-n) % OPUS_FRAME, np.float32)
    padded[:n] = x48

    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = OPUS_RATE
    enc.format = "flt"
    enc.layout = "mono"
    enc.bit_rate = int(bitrate)
    enc.open()
    packets = []
    for i in range(0, len(padded), OPUS_FRAME):
        frame = av.AudioFrame.from_ndarray(padded[None, i:i + OPUS_FRAME], format="flt", layout="mono")
        frame.sample_rate = OPUS_RATE
        frame.pts = i
        packets.extend(enc.encode(frame))
    packets.extend(enc.encode(None))

    dec = av.CodecContext.create("libopus", "r")
    dec.sample_rate = OPUS_RATE
    dec.layout = "mono"
    dec.extradata = enc.extradata
    dec.open()
    out = []
    for packet in packets + [None]:
        for frame in dec.decode(packet):
            a = frame.to_ndarray().reshape(-1)
            out.append(a.astype(np.float32) / 32768.0 if a.dtype == np.int16 else a.astype(np.float32))
    y = np.concatenate(out) if out else np.zeros(0, np.float32)
    # The decoder either drops the pre-skip itself or hands it to us at the start.
    extra = len(y) - len(padded)
    preskip = _opus_head_preskip(enc.extradata)
    if extra not in (0, preskip):
        raise RuntimeError(f"Opus decoder returned {len(y)} samples for {len(padded)} in "
                           f"(pre-skip {preskip}); cannot align")
    y = y[extra:extra + n]
    return resample_poly(y, 1, up).astype(np.float32)[: len(x)]


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the random chain (uniform draws within each range)."""

    p_reverb: float = 0.5
    rt60_s: tuple[float, float] = (0.15, 0.7)
    drr_db: tuple[float, float] = (0.0, 12.0)
    p_noise: float = 0.7
    snr_db: tuple[float, float] = (5.0, 35.0)
    p_band: float = 0.5
    p_gain: float = 0.8
    gain_db: tuple[float, float] = (-18.0, 6.0)
    p_opus: float = 0.6
    opus_bitrate: tuple[int, int] = (12000, 48000)


def augment(audio: np.ndarray, *, seed: int, sr: int = SAMPLE_RATE,
            config: AugmentConfig = AugmentConfig()) -> tuple[np.ndarray, dict]:
    """audio (N,) -> (augmented (N,), the steps applied with their parameters); same seed, same result.

    Order follows the signal path: room, ambient noise, microphone band, level, codec.
    """
    x = _check(audio)
    rng = np.random.default_rng(seed)
    c = config
    steps: dict = {}
    if rng.random() < c.p_reverb:
        steps["reverb"] = {"rt60_s": float(rng.uniform(*c.rt60_s)), "drr_db": float(rng.uniform(*c.drr_db))}
        x = reverb(x, steps["reverb"]["rt60_s"], steps["reverb"]["drr_db"], rng, sr=sr)
    if rng.random() < c.p_noise:
        steps["noise"] = {"snr_db": float(rng.uniform(*c.snr_db)),
                          "colour": str(rng.choice(sorted(NOISE_COLOURS)))}
        x = add_noise(x, steps["noise"]["snr_db"], rng, colour=steps["noise"]["colour"])
    if rng.random() < c.p_band:
        band = str(rng.choice(sorted(BANDS_HZ)))
        steps["band"] = {"name": band, "hz": BANDS_HZ[band]}
        x = band_limit(x, *BANDS_HZ[band], sr=sr)
    if rng.random() < c.p_gain:
        steps["gain_db"] = float(rng.uniform(*c.gain_db))
        x = gain(x, steps["gain_db"])
    if rng.random() < c.p_opus:
        steps["opus_bitrate"] = int(rng.integers(c.opus_bitrate[0], c.opus_bitrate[1] + 1))
        x = opus_roundtrip(x, steps["opus_bitrate"], sr=sr)
    return x, steps

