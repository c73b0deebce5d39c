"""Audio in: PCM of any rate, layout and sample type -> float32 mono at a fixed rate, streaming.

Callers hand over what they have: a microphone's s16 stereo 48 kHz frames (WebRTC), a TTS
engine's float32 mono 22.05 kHz chunks, a WAV file's samples. `StreamResampler` keeps the
filter state between chunks, so a stream cut into chunks of any size resamples exactly like
the whole (up to the filter's few-sample delay, which `flush` releases).

Legend: n samples per channel, C channels.
"""
from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np

from presenter.errors import UserError

ANALYSIS_RATE = 16000      # Hz: VAD and speech front-ends
PLAYBACK_RATE = 48000      # Hz: what WebRTC (Opus) carries
MAX_CHANNELS = 8


def as_float_mono(pcm: np.ndarray) -> np.ndarray:
    """PCM (n,) or (n, C), int16 or float in [-1, 1] -> (n,) float32 mono (channels averaged)."""
    x = np.asarray(pcm)
    if x.ndim == 2:
        if not 1 <= x.shape[1] <= MAX_CHANNELS:
            raise UserError(f"audio has shape {x.shape}: expected (samples,) or (samples, channels) "
                            f"with 1..{MAX_CHANNELS} channels")
    elif x.ndim != 1:
        raise UserError(f"audio has shape {x.shape}: expected (samples,) or (samples, channels)")
    if x.dtype == np.int16:
        x = x.astype(np.float32) * (1.0 / 32768.0)
    elif x.dtype in (np.float32, np.float64):
        x = x.astype(np.float32, copy=False)
    else:
        raise UserError(f"audio samples are {x.dtype}: expected int16 or float32/float64 in [-1, 1]")
    return x.mean(axis=1, dtype=np.float32) if x.ndim == 2 else x


def frame_to_pcm(frame: av.AudioFrame) -> tuple[np.ndarray, int]:
    """A decoded audio frame (any layout, packed or planar) -> (PCM (n, C), sample rate)."""
    a = frame.to_ndarray()
    ch = len(frame.layout.channels)
    if frame.format.is_planar:
        pcm = a.T                                   # (C, n) -> (n, C)
    else:
        pcm = a.reshape(-1, ch)                     # (1, n*C) interleaved -> (n, C)
    return pcm, frame.sample_rate


def pcm_to_frame(samples: np.ndarray, rate: int) -> av.AudioFrame:
    """(n,) float32 mono in [-1, 1] -> packed s16 mono AudioFrame (pts unset)."""
    s16 = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(s16.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = rate
    return frame


class StreamResampler:
    """Stateful resampler to float32 mono at `rate`; the input rate may change between chunks.

    Not thread-safe: one owner feeds it (the stream's ingest stage).
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._in_rate: int | None = None
        self._rs: av.AudioResampler | None = None

    def __call__(self, pcm: np.ndarray, sample_rate: int) -> np.ndarray:
        """PCM (n,) or (n, C) at sample_rate -> (m,) float32 mono at self.rate (m ~ n * rate / sample_rate)."""
        if not 8000 <= int(sample_rate) <= 192000:
            raise UserError(f"sample rate {sample_rate} Hz is out of range: use 8000..192000 Hz")
        mono = as_float_mono(pcm)
        out = []
        if sample_rate != self._in_rate:
            out.append(self.flush())               # the old rate's tail, then a fresh filter
            self._in_rate = int(sample_rate)
        if self._in_rate == self.rate:
            out.append(mono.copy())
        elif len(mono):
            if self._rs is None:
                self._rs = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono).reshape(1, -1), format="flt",
                                               layout="mono")
            frame.sample_rate = self._in_rate
            out.extend(f.to_ndarray().reshape(-1) for f in self._rs.resample(frame))
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        """Release the samples the filter still holds; the next chunk starts a fresh filter."""
        rs, self._rs = self._rs, None
        if rs is None:
            return np.zeros(0, np.float32)
        tail = [f.to_ndarray().reshape(-1) for f in rs.resample(None)]
        return np.concatenate(tail) if tail else np.zeros(0, np.float32)


def resample(pcm: np.ndarray, sample_rate: int, rate: int = ANALYSIS_RATE) -> np.ndarray:
    """Whole-signal convenience: PCM at sample_rate -> (m,) float32 mono at rate."""
    rs = StreamResampler(rate)
    return np.concatenate([rs(pcm, sample_rate), rs.flush()])


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV -> (PCM (n, C) int16, sample rate). Other encodings are a UserError."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise UserError(f"{path}: {8 * w.getsampwidth()}-bit WAV; only 16-bit PCM is read here")
            data = np.frombuffer(w.readframes(w.getnframes()), "<i2")
            return data.reshape(-1, w.getnchannels()), w.getframerate()
    except (wave.Error, EOFError) as e:
        raise UserError(f"{path}: not a readable PCM WAV ({e})") from None


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    """(n,) float32 mono in [-1, 1] -> 16-bit mono WAV."""
    s16 = np.clip(np.round(np.asarray(samples, np.float32) * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(s16.tobytes())
