"""Exported engines agree with the PyTorch modules they come from."""
from __future__ import annotations

import numpy as np

from presenter.audio.features import FeatureConfig, features_for_clip, torch_encode
from presenter.engines.onnxruntime import whisper_encode


def test_onnxruntime_whisper_features_match_torch() -> None:
    """Speech features computed with the ONNX Runtime encoder match the PyTorch ones (max abs < 1e-3,
    cosine > 0.9999) on a voiced test signal."""
    sr = 16000
    t = np.arange(sr) / sr
    audio = (0.2 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    cfg = FeatureConfig()
    a = features_for_clip(audio, cfg, encode=torch_encode())
    b = features_for_clip(audio, cfg, encode=whisper_encode(1))
    assert np.abs(a - b).max() < 1e-3
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.9999
