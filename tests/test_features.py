"""Speech features per video frame: streaming equals offline, and the look-ahead bound holds."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from presenter.audio.features import Encode, FeatureConfig, StreamingFeatures, features_for_clip, torch_encode
from presenter.errors import UserError

SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """0.8 s of real read speech (Debian pocketsphinx-testdata) when installed, else voiced noise bursts."""
    n = 12_900                                             # not a multiple of the 640-sample hop
    if SPEECH.is_file():
        with wave.open(str(SPEECH)) as w:
            w.setpos(16000)
            return np.frombuffer(w.readframes(n), np.int16).astype(np.float32) / 32768
    t = np.arange(n) / 16000
    rng = np.random.default_rng(0)
    return (0.2 * np.sin(2 * np.pi * 140 * t) * (np.sin(2 * np.pi * 5 * t) > 0)
            + 0.02 * rng.standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def encode() -> Encode:
    return torch_encode()


def stream(audio: np.ndarray, cfg: FeatureConfig, encode: Encode, chunk_sizes: list[int], every: int = 1,
           ready: list[int] | None = None) -> np.ndarray:
    """Feed `audio` through StreamingFeatures in chunks of the given sizes (cycled), then flush.
    ready: if given, gets the count of frames out after each push."""
    s = StreamingFeatures(cfg, encode=encode, every=every)
    out, i, k = [], 0, 0
    while i < len(audio):
        n = chunk_sizes[k % len(chunk_sizes)]
        out.append(s.push(audio[i:i + n]))
        if ready is not None:
            ready.append(s.next_frame)
        i, k = i + n, k + 1
    out.append(s.flush())
    return np.concatenate(out)


@pytest.fixture(scope="module")
def offline(speech: np.ndarray, encode: Encode) -> np.ndarray:
    return features_for_clip(speech, FeatureConfig(), encode=encode)


@pytest.mark.parametrize("chunks", [[1, 159, 5000], [640], [100_000]], ids=["ragged", "hop", "whole"])
def test_streaming_equals_offline(speech: np.ndarray, encode: Encode, offline: np.ndarray,
                                  chunks: list[int]) -> None:
    """Any chunking of the stream gives bit-identical features to features_for_clip, ceil(S / 640) frames."""
    assert offline.shape == (-(-len(speech) // 640), 768)
    np.testing.assert_array_equal(stream(speech, FeatureConfig(), encode, chunks), offline)


def test_one_encoder_call_per_two_frames(speech: np.ndarray, encode: Encode, offline: np.ndarray) -> None:
    """every=2: half the encoder calls; streaming (any chunking) equals offline; a group's last frame
    has the every=1 features, the first one comes from the same window a hop earlier (so it differs),
    and frames only come out in whole groups until the flush."""
    calls = []

    def counted(mel: np.ndarray) -> np.ndarray:
        calls.append(1)
        return encode(mel)

    two = features_for_clip(speech, FeatureConfig(), encode=counted, every=2)
    assert len(calls) == -(-len(offline) // 2)
    for chunks in ([1, 159, 5000], [640], [100_000]):
        ready: list[int] = []
        np.testing.assert_array_equal(stream(speech, FeatureConfig(), encode, chunks, every=2, ready=ready), two)
        assert all(n % 2 == 0 for n in ready)
    # (the log-mels of a different set of windows share STFT columns differently: float rounding only)
    np.testing.assert_allclose(two[1::2], offline[1::2], atol=1e-4)
    assert not np.allclose(two[0::2], offline[0::2], atol=1e-3)
    # The first of a group is the same encoder output a hop earlier in the window: close to, not equal to, its own.
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(two[0::2], offline[0::2])]
    assert np.median(corr) > 0.8, np.median(corr)


def test_frame_depends_on_at_most_the_lookahead(speech: np.ndarray, encode: Encode) -> None:
    """Changing audio from (t + 1) * hop + lookahead on leaves frames <= t unchanged; one sample earlier changes t."""
    cfg = FeatureConfig(window_s=0.4, lookahead_s=0.06)
    t = 9
    cut = (t + 1) * cfg.hop_samples + cfg.lookahead_samples
    base = features_for_clip(speech, cfg, encode=encode, n_frames=t + 2)
    later = speech.copy()
    later[cut:] = np.random.default_rng(1).standard_normal(len(speech) - cut) * 0.3
    changed = features_for_clip(later, cfg, encode=encode, n_frames=t + 2)
    np.testing.assert_array_equal(changed[: t + 1], base[: t + 1])
    assert not np.allclose(changed[t + 1], base[t + 1], atol=1e-4)
    earlier = speech.copy()
    earlier[cut - 1] += 0.5
    assert not np.allclose(features_for_clip(earlier, cfg, encode=encode, n_frames=t + 1)[t], base[t], atol=1e-4)


def test_stream_emits_each_frame_as_soon_as_its_lookahead_arrived(speech: np.ndarray, encode: Encode) -> None:
    """After n samples, exactly the frames t with (t + 1) * hop + lookahead <= n have been emitted."""
    cfg = FeatureConfig(window_s=0.4, lookahead_s=0.1)
    s = StreamingFeatures(cfg, encode=encode)
    for n in range(160, 8001, 160):
        s.push(speech[n - 160:n])
        assert s.next_frame == max(0, (n - cfg.lookahead_samples) // cfg.hop_samples), n


def test_mean_pool_and_explicit_frame_count(speech: np.ndarray, encode: Encode, offline: np.ndarray) -> None:
    """pool='mean' averages the two 384-d halves of 'concat'; n_frames cuts short or pads with silence."""
    cat = features_for_clip(speech, FeatureConfig(), encode=encode, n_frames=len(offline) + 3)
    np.testing.assert_array_equal(cat[: len(offline)], offline)
    mean = features_for_clip(speech, FeatureConfig(pool="mean"), encode=encode, n_frames=5)
    assert mean.shape == (5, 384)
    np.testing.assert_allclose(mean, (cat[:5, :384] + cat[:5, 384:]) / 2, rtol=0, atol=1e-6)


def test_empty_audio_gives_no_frames(encode: Encode) -> None:
    """No audio: no frames, offline and streaming."""
    cfg = FeatureConfig()
    assert features_for_clip(np.zeros(0, np.float32), cfg, encode=encode).shape == (0, 768)
    assert StreamingFeatures(cfg, encode=encode).flush().shape == (0, 768)


@pytest.mark.parametrize("kwargs, field", [({"lookahead_s": 0.05}, "lookahead_s"), ({"hop_s": 0.0}, "hop_s"),
                                           ({"window_s": 0.1}, "window_s"), ({"window_s": 31.0}, "window_s"),
                                           ({"pool": "max"}, "pool")])
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    """A look-ahead off the 20 ms grid, a zero hop, a window too short or long, or an unknown pool is a UserError."""
    with pytest.raises(UserError, match=f"FeatureConfig.{field}="):
        FeatureConfig(**kwargs)


@pytest.mark.parametrize("seed", range(3))
def test_window_mels_fast_path_matches_per_window_log_mel(seed: int) -> None:
    """Sharing STFT columns between overlapping windows gives each window's own Whisper log-mel,
    including its reflect-padded edges and its own normalisation, for windows fed in any grouping
    and after a jump (skipped windows)."""
    from presenter.audio.features import WindowMels

    rng = np.random.default_rng(seed)
    cfg = FeatureConfig()
    signal = (rng.standard_normal(3 * 16000) * np.linspace(0.01, 0.5, 3 * 16000)).astype(np.float32)
    starts = np.arange(0, len(signal) - cfg.window_samples, cfg.hop_samples)
    ref = WindowMels(cfg.window_samples, impl="ref")(signal, 0, starts)
    fast = WindowMels(cfg.window_samples)
    groups = np.split(np.delete(starts, [5, 6, 7]), [1, 4, 9, 10])
    got = np.concatenate([fast(signal[g[0]:], int(g[0]), g) for g in groups])
    np.testing.assert_allclose(got, np.delete(ref, [5, 6, 7], axis=0), atol=2e-6, rtol=0)
    assert fast._cols.shape[1] < 4 * cfg.window_samples // 160, "the column cache keeps only what windows need"
