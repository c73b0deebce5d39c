"""Whisper front end: weight file check, model.bin parser, log-mel, and the PyTorch encoder vs CTranslate2."""
from __future__ import annotations

import importlib.util
import re
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from presenter.audio.mel import log_mel, mel_filters
from presenter.audio.whisper import (MODEL_PACKAGE, WhisperEncoder, export_onnx, load_encoder, model_dir,
                                     read_ct2_variables, verify_model_file)
from presenter.errors import UserError

SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def speech_16k(seconds: float) -> np.ndarray:
    """Real read speech (Debian pocketsphinx-testdata) when installed, else a voiced synthetic signal; (S,) float32."""
    n = round(seconds * 16000)
    if SPEECH.is_file():
        with wave.open(str(SPEECH)) as w:
            audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768
        return np.tile(audio, -(-n // len(audio)))[:n]
    t = np.arange(n) / 16000
    f0 = 120 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    return (0.1 * voiced + 0.01 * np.random.default_rng(0).standard_normal(n)).astype(np.float32)


@pytest.fixture(scope="module")
def encoder() -> WhisperEncoder:
    return load_encoder()


def test_model_file_is_found_and_verified() -> None:
    """The installed package's model.bin is found without importing it and passes the size and sha256 check."""
    d = model_dir()
    assert (d / "model.bin").stat().st_size == 75_537_502
    assert (d / "config.json").is_file()


def test_missing_or_damaged_weights_raise_user_error(tmp_path: Path) -> None:
    """A missing, truncated or altered model.bin raises UserError saying how to get the right one."""
    with pytest.raises(UserError, match=MODEL_PACKAGE.replace(".", r"\.")):
        verify_model_file(tmp_path / "model.bin")
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(UserError, match="bytes, expected 75,537,502"):
        verify_model_file(bad)
    shutil.copyfile(model_dir() / "model.bin", bad)
    with open(bad, "r+b") as f:
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(UserError, match="sha256"):
        load_encoder(bad)


def test_parser_reads_every_variable_of_model_bin() -> None:
    """The v6 parser walks all 148 variables to the file's last byte and resolves the one alias."""
    v = read_ct2_variables(model_dir() / "model.bin")
    assert len(v) == 149                                   # 148 variables + decoder/projection/weight alias
    assert v["decoder/projection/weight"] is v["decoder/embeddings/weight"]
    assert int(v["encoder/num_heads"]) == 6
    assert v["encoder/conv1/weight"].shape == (384, 80, 3) and v["encoder/conv1/weight"].dtype == np.float16
    assert v["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert sum(re.match(r"encoder/layer_\d/", k) is not None for k in v) == 4 * 12


def _faster_whisper_feature_extractor():
    """faster-whisper's FeatureExtractor, loaded from its file (the package's __init__ needs tokenizers)."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("faster-whisper is not installed: nothing to compare the log-mel with")
    path = Path(list(spec.submodule_search_locations)[0]) / "feature_extractor.py"
    module_spec = importlib.util.spec_from_file_location("_fw_feature_extractor", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.FeatureExtractor()


@pytest.mark.parametrize("seconds", [0.5, 1.0, 2.03])
def test_log_mel_matches_faster_whisper(seconds: float) -> None:
    """Our filterbank equals faster-whisper's (librosa's Slaney mel) and our log-mel matches its output at 1e-5."""
    fe = _faster_whisper_feature_extractor()
    np.testing.assert_allclose(mel_filters(), fe.mel_filters, rtol=0, atol=1e-9)
    audio = speech_16k(seconds)
    ours = log_mel(audio)
    assert ours.shape == (80, len(audio) // 160)
    np.testing.assert_allclose(ours, fe(audio, padding=0), rtol=0, atol=1e-5)


def test_batched_log_mel_normalises_each_item_alone() -> None:
    """log_mel on (B, S) gives each row what log_mel on that row alone gives (its own max - 8 floor)."""
    audio = speech_16k(1.0)
    batch = np.stack([audio, 0.01 * audio[::-1]])
    out = log_mel(batch)
    np.testing.assert_array_equal(out[0], log_mel(audio))
    np.testing.assert_array_equal(out[1], log_mel(batch[1]))


def test_encoder_output_shapes(encoder: WhisperEncoder) -> None:
    """(B, 80, T) -> (B, ceil(T / 2), 384) for short and odd T; more than 30 s is refused."""
    with torch.inference_mode():
        for T in (100, 101, 200):
            assert encoder(torch.zeros(2, 80, T)).shape == (2, -(-T // 2), 384)
        with pytest.raises(AssertionError, match="3000"):
            encoder(torch.zeros(1, 80, 3002))


@pytest.mark.parametrize("seconds", [1.0, 2.0])
def test_encoder_matches_ctranslate2(encoder: WhisperEncoder, seconds: float) -> None:
    """Our fp32 encoder equals CTranslate2's fp32 Whisper.encode on the same short window.

    Tolerance: every frame's cosine >= 0.99999 and max abs error <= 1e-4 (features reach |x| ~ 10;
    measured: cosine >= 0.9999998, max abs 2.3e-5).
    """
    ctranslate2 = pytest.importorskip("ctranslate2")
    ct2 = ctranslate2.models.Whisper(str(model_dir()), device="cpu", compute_type="float32", intra_threads=1)
    mel = log_mel(np.stack([speech_16k(seconds), 0.3 * speech_16k(seconds)[::-1].copy()]))   # (2, 80, T)
    ref = np.array(ct2.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    with torch.inference_mode():
        ours = encoder(torch.from_numpy(mel)).numpy()
    assert ours.shape == ref.shape == (2, round(50 * seconds), 384)
    cos = (ours * ref).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() >= 0.99999, cos.min()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)


def test_onnx_export_matches_torch(encoder: WhisperEncoder, tmp_path: Path) -> None:
    """The exported encoder runs in onnxruntime with dynamic batch and length and matches torch at 1e-4."""
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(encoder, tmp_path / "encoder.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for B, seconds in ((1, 1.0), (2, 2.0)):
        mel = log_mel(np.stack([speech_16k(seconds)] * B))
        with torch.inference_mode():
            ref = encoder(torch.from_numpy(mel)).numpy()
        np.testing.assert_allclose(session.run(None, {"mel": mel})[0], ref, rtol=0, atol=1e-4)
