"""Speech features for the SyncFormer: Whisper-encoder features, one vector per 25 fps video frame.

Video frame t owns the audio samples [t * hop, (t + 1) * hop) (sample 0 at frame 0's start, as in
the corpus). Its features come from one fixed-length window of audio that ends `lookahead_s`
after that span:

    window(t) = audio[(t + 1) * hop + lookahead - window : (t + 1) * hop + lookahead]

(zeros before the first sample and, at the end of a clip or stream, after the last). The window
gets its own log-mel (`presenter.audio.mel`) and goes through the Whisper encoder (50 frames per
second); the hop / 20 ms encoder frames of the frame's span are kept, concatenated or averaged
(their receptive fields are centred at t * hop and t * hop + 20 ms for a 40 ms hop: the span,
10 ms early). So frame t depends on no
audio later than `lookahead_s` past its own span, every frame sees the same window length in
training and live, and `features_for_clip` (offline) and `StreamingFeatures` (live) compute the
same windows one at a time, so their results are bit-identical (tested).

Legend: S samples at 16 kHz, T video frames at 25 fps, F = feat_dim (768 for concat, 384 for mean).
Cost: one encoder call per video frame on a window_s window (1 s: 50 encoder frames, ~0.8 GFLOP).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from presenter.audio.mel import HOP, N_FFT, N_MELS, SAMPLE_RATE, frames_power_mel, log_mel, normalise_log_mel, power_mel
from presenter.audio.whisper import WhisperEncoder, load_encoder
from presenter.errors import UserError

ENCODER_HOP = 2 * HOP      # samples per encoder frame (20 ms): conv2 has stride 2
ENCODER_DIM = 384

Encode = Callable[[np.ndarray], np.ndarray]   # log-mel (B, 80, 2N) float32 -> features (B, N, 384) float32


@dataclass(frozen=True)
class FeatureConfig:
    window_s: float = 1.0       # encoder input per video frame, seconds; multiple of 20 ms, at most 30 s
    lookahead_s: float = 0.08   # audio past the frame's own span that its features may see; multiple of 20 ms
    hop_s: float = 0.04         # video frame period (25 fps); multiple of 20 ms
    pool: str = "concat"        # the hop's encoder frames -> one vector: "concat" (F = 384 * hop / 20 ms) or "mean"

    def __post_init__(self) -> None:
        for name in ("window_s", "lookahead_s", "hop_s"):
            value = getattr(self, name)
            if value < 0 or abs(value * SAMPLE_RATE / ENCODER_HOP - round(value * SAMPLE_RATE / ENCODER_HOP)) > 1e-6:
                raise UserError(f"FeatureConfig.{name}={value}: must be a non-negative multiple of 0.02 s")
        if self.hop_s <= 0:
            raise UserError(f"FeatureConfig.hop_s={self.hop_s}: must be positive (0.04 for 25 fps)")
        if not self.hop_s + self.lookahead_s <= self.window_s <= 30:
            raise UserError(f"FeatureConfig.window_s={self.window_s}: must cover hop_s + lookahead_s = "
                            f"{self.hop_s + self.lookahead_s:g} s and be at most 30 s")
        if self.pool not in ("concat", "mean"):
            raise UserError(f"FeatureConfig.pool={self.pool!r}: choose 'concat' or 'mean'")

    @property
    def window_samples(self) -> int:
        """Window length, samples."""
        return round(self.window_s * SAMPLE_RATE)

    @property
    def hop_samples(self) -> int:
        """Video frame period, samples."""
        return round(self.hop_s * SAMPLE_RATE)

    @property
    def lookahead_samples(self) -> int:
        """Look-ahead, samples."""
        return round(self.lookahead_s * SAMPLE_RATE)

    @property
    def left_pad_samples(self) -> int:
        """Zeros before sample 0, so that frame 0's window starts at padded sample 0."""
        return self.window_samples - self.hop_samples - self.lookahead_samples

    @property
    def feat_dim(self) -> int:
        """Feature width per video frame."""
        return ENCODER_DIM * (self.hop_samples // ENCODER_HOP if self.pool == "concat" else 1)


def torch_encode(encoder: WhisperEncoder | None = None) -> Encode:
    """The PyTorch encoder (default: tiny.en from the installed package) as an `Encode` callable."""
    enc = load_encoder() if encoder is None else encoder

    def encode(mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return enc(torch.from_numpy(mel)).numpy()
    return encode


@lru_cache(maxsize=1)
def default_encode() -> Encode:
    """The tiny.en PyTorch encoder, loaded once per process (used when no `encode` is given)."""
    return torch_encode()


class WindowMels:
    """Whisper log-mels of windows of one signal (starts on the 10 ms mel grid), sharing STFT columns.

    Each window's log-mel is its own (reflect-padded at its own edges, normalised on its own
    maximum), but all but its first two and last STFT columns are columns of the signal itself,
    the same for every window that covers them: those are computed once and cached, and only the
    three edge columns and the normalisation are per window. impl="ref" runs `log_mel` on each
    window; the two agree to float rounding (tested).
    """

    EDGE = 4 * HOP                   # samples given to power_mel for a window's edge columns

    def __init__(self, window_samples: int, *, impl: str = "fast") -> None:
        assert window_samples % HOP == 0 and window_samples >= self.EDGE, window_samples
        assert impl in ("fast", "ref"), impl
        self.window = window_samples
        self.impl = impl
        self.n = window_samples // HOP                       # mel columns per window
        self.first = -(-(N_FFT // 2) // HOP)                 # first column inside the window (2)
        self.last = (window_samples - N_FFT // 2) // HOP     # last column inside the window (98)
        self._cols = np.zeros((N_MELS, 0), np.float32)       # cached signal columns from _c0 on
        self._c0 = 0

    def __call__(self, buf: np.ndarray, buf_start: int, starts: np.ndarray) -> np.ndarray:
        """Signal samples `buf` (from absolute sample buf_start) and absolute window starts (k,),
        multiples of HOP -> log-mels (k, 80, window / HOP)."""
        out = np.empty((len(starts), N_MELS, self.n), np.float32)
        for i, a in enumerate(starts):
            w = buf[a - buf_start:a - buf_start + self.window]
            if self.impl == "ref":
                out[i] = log_mel(w)
                continue
            power = np.empty((N_MELS, self.n), np.float32)
            power[:, :self.first] = power_mel(w[:self.EDGE])[:, :self.first]
            power[:, self.last + 1:] = power_mel(w[-self.EDGE:])[:, self.last + 1 - self.n:]
            power[:, self.first:self.last + 1] = self._columns(buf, buf_start, a // HOP + self.first,
                                                               a // HOP + self.last + 1)
            out[i] = normalise_log_mel(power)
        return out

    def _columns(self, buf: np.ndarray, buf_start: int, c_from: int, c_to: int) -> np.ndarray:
        """Signal columns [c_from, c_to) (column c centred on absolute sample c * HOP), cached."""
        if c_from < self._c0 or c_from > self._c0 + self._cols.shape[1]:
            self._cols, self._c0 = np.zeros((N_MELS, 0), np.float32), c_from       # a jump: start afresh
        have = self._c0 + self._cols.shape[1]
        if c_to > have:
            lo = have * HOP - N_FFT // 2 - buf_start                 # first sample of column `have`
            x = buf[lo:(c_to - 1) * HOP + N_FFT // 2 - buf_start]
            frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP]          # (c_to - have, 400)
            self._cols = np.concatenate([self._cols, frames_power_mel(frames)], axis=1)
        drop = c_from - self._c0                                     # windows only move forward
        self._cols, self._c0 = self._cols[:, drop:], c_from
        return self._cols[:, :c_to - c_from]


def _encoded_frames(frames: np.ndarray, skip: np.ndarray, every: int) -> np.ndarray:
    """Positions (k,) into frames (K,) whose windows the encoder runs on: the last frame of each
    group of `every` (by absolute frame index // every) that has a frame not skipped."""
    last = np.r_[frames[1:] // every != frames[:-1] // every, True]            # last of its group in frames
    group = np.cumsum(np.r_[0, last[:-1]])                                       # group number per position
    needed = np.zeros(group[-1] + 1, bool) if len(frames) else np.zeros(0, bool)
    np.logical_or.at(needed, group, ~skip)
    return np.flatnonzero(last & needed[group])


def _window_features(mels: np.ndarray, frames: np.ndarray, cfg: FeatureConfig, encode: Encode,
                     skip: np.ndarray | None = None, silence: np.ndarray | None = None, every: int = 1) -> np.ndarray:
    """Features (K, F) of consecutive frames (K,) (absolute indices); flagged frames in skip (K,) bool
    get `silence` (F,). mels (k, 80, window / 10 ms) are the windows at `_encoded_frames` positions.

    every: frames are taken in groups of this many (by absolute index, so any chunking agrees),
    and one encoder call on the window of a group's last frame gives the features of all of
    them: frame t - j takes the encoder frames j hops earlier in that window, so it sees j hops
    more look-ahead than `cfg.lookahead_s` and is ready j frames later (`SyncFormerDriver` adds
    that to its look-ahead). every=1 is the window per frame the models were trained on.

    One encoder call per window (batch 1), in both the offline and the streaming path: batched
    matmuls round differently with the batch size, and one window at a time makes the two paths
    bit-identical. Batching bought nothing reliable here (1 thread, 1 s windows, ms per window at
    batch 1 / 8 / 32: torch 9.8 / 8.0 / 10.0, onnxruntime 4.7 / 5.3 / 4.8).
    """
    first = cfg.left_pad_samples // ENCODER_HOP               # encoder frame centred at the span's start
    n = cfg.hop_samples // ENCODER_HOP
    if first < (every - 1) * n:
        raise UserError(f"every={every}: the window holds only {first // n} frames before the last one's span")
    skip = np.zeros(len(frames), bool) if skip is None else skip
    out = np.zeros((len(frames), cfg.feat_dim), np.float32)
    out[skip] = silence
    encoded = _encoded_frames(frames, skip, every)
    for p, mel in zip(encoded, mels, strict=True):
        enc = encode(mel[None])[0]                                # (window / 320, 384)
        for q in range(p, -1, -1):
            if frames[q] // every != frames[p] // every:
                break
            if not skip[q]:
                own = enc[first - (p - q) * n:first - (p - q) * n + n]
                out[q] = own.reshape(-1) if cfg.pool == "concat" else own.mean(axis=0)
    return out


def features_for_clip(audio16k: np.ndarray, cfg: FeatureConfig, *, n_frames: int | None = None,
                      encode: Encode | None = None, impl: str = "fast", every: int = 1) -> np.ndarray:
    """Audio (S,) float32 16 kHz -> features (T, F); T = n_frames, default ceil(S / hop).
    impl: the window log-mels' implementation (`WindowMels`); every: see `_window_features`.

    Frames whose window runs past the audio see zeros there, as `StreamingFeatures.flush` gives.
    """
    audio16k = np.asarray(audio16k, dtype=np.float32)
    assert audio16k.ndim == 1, f"expected mono audio (S,), got shape {audio16k.shape}"
    assert n_frames is None or n_frames >= 0, f"n_frames must be >= 0, got {n_frames}"
    hop, window, pad = cfg.hop_samples, cfg.window_samples, cfg.left_pad_samples
    T = -(-len(audio16k) // hop) if n_frames is None else n_frames
    if T == 0:
        return np.zeros((0, cfg.feat_dim), np.float32)
    padded = np.zeros(pad + max(len(audio16k), (T - 1) * hop + window), np.float32)
    padded[pad:pad + len(audio16k)] = audio16k
    padded = padded[: (T - 1) * hop + window]
    frames = np.arange(T)
    encoded = _encoded_frames(frames, np.zeros(T, bool), every)
    mels = WindowMels(window, impl=impl)(padded, 0, frames[encoded] * hop)       # (k, 80, window / 160)
    return _window_features(mels, frames, cfg, encode or default_encode(), every=every)


def silence_features(cfg: FeatureConfig, encode: Encode) -> np.ndarray:
    """(F,) features of a window of digital silence."""
    return _window_features(log_mel(np.zeros(cfg.window_samples, np.float32))[None], np.zeros(1, int), cfg, encode)[0]


class StreamingFeatures:
    """Live features: `push` audio chunks of any size, get the frames that became ready.

    Frame t is ready once audio up to (t + 1) * hop + lookahead has arrived; `flush` ends the
    stream, padding zeros, and returns the frames up to ceil(S / hop). Not thread-safe: one owner.
    """

    def __init__(self, cfg: FeatureConfig, *, encode: Encode | None = None,
                 skip: Callable[[np.ndarray], np.ndarray] | None = None, silence: np.ndarray | None = None,
                 impl: str = "fast", every: int = 1) -> None:
        """skip: frame indices (k,) -> (k,) bool, frames whose encoder call may be saved (silence);
        they get `silence` (F,) instead (default: `silence_features`). impl: see `WindowMels`.
        every: one encoder call per group of this many frames (`_window_features`); a frame then
        comes out when its group's last frame is ready."""
        self.cfg, self.every = cfg, every
        self._mels = WindowMels(cfg.window_samples, impl=impl)
        self._encode = encode or default_encode()
        self._skip = skip
        self._silence = silence if silence is not None or skip is None else silence_features(cfg, self._encode)
        self._buf = np.zeros(cfg.left_pad_samples, np.float32)  # padded audio from frame `next_frame`'s window on
        self._n_audio = 0                                   # real samples received
        self.next_frame = 0                                 # index of the next frame to emit
        self._closed = False

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Audio chunk (n,) float32 16 kHz -> features (k, F) of the k >= 0 frames that became ready."""
        assert not self._closed, "push after flush: start a new StreamingFeatures"
        chunk = np.asarray(chunk, dtype=np.float32)
        assert chunk.ndim == 1, f"expected mono audio (n,), got shape {chunk.shape}"
        self._buf = np.concatenate([self._buf, chunk])
        self._n_audio += len(chunk)
        return self._emit()

    def flush(self) -> np.ndarray:
        """End of stream -> features (k, F) of the remaining frames, up to ceil(S / hop) in all."""
        assert not self._closed, "flush called twice"
        self._closed = True
        last = -(-self._n_audio // self.cfg.hop_samples) - 1  # index of the last frame that has audio
        need = (last - self.next_frame) * self.cfg.hop_samples + self.cfg.window_samples
        if need > len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros(need - len(self._buf), np.float32)])
        return self._emit(limit=last + 1 - self.next_frame)

    def _emit(self, limit: int | None = None) -> np.ndarray:
        hop, window = self.cfg.hop_samples, self.cfg.window_samples
        k = max(0, (len(self._buf) - window) // hop + 1)
        if limit is not None:
            k = min(k, limit)
        else:
            k -= (self.next_frame + k) % self.every             # whole groups only, until the flush
        if k == 0:
            return np.zeros((0, self.cfg.feat_dim), np.float32)
        start = self.next_frame * hop                        # absolute (padded) sample of _buf[0]
        frames = np.arange(self.next_frame, self.next_frame + k)
        skip = np.zeros(k, bool) if self._skip is None else self._skip(frames)
        encoded = _encoded_frames(frames, skip, self.every)
        mels = self._mels(self._buf, start, start + encoded * hop)                # (k', 80, window / 160)
        feats = _window_features(mels, frames, self.cfg, self._encode, skip, self._silence, self.every)
        self._buf = self._buf[k * hop:]
        self.next_frame += k
        return feats
