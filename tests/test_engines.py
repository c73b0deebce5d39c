"""Engines: the ONNX Runtime encoder agrees with PyTorch; torch and ONNX Runtime engines agree through
the Engine protocol; 'auto' picks the fastest measured backend; the TensorRT engine's CPU-side logic
(shape profiles, binding layout, plan cache key), with its GPU test skipped where TensorRT cannot run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from presenter.audio.features import FeatureConfig, features_for_clip, torch_encode
from presenter.engines.base import Engine, open_engine, record_measurements, resolve_backend
from presenter.engines.onnxruntime import whisper_encode
from presenter.engines.tensorrt import (ALIGN_BYTES, arena_bytes, binding_layout, check_within_profile, plan_cache_key,
                                        plan_path, profile_shapes)
from presenter.errors import UserError
from presenter.export.registry import NETWORKS, onnx_io


@pytest.mark.usefixtures("one_torch_thread")
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


# --- the Engine protocol and its backends ------------------------------------------------------

@pytest.fixture()
def engine_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PRESENTER_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("network", ["syncformer", "generator"])
def test_torch_and_onnxruntime_engines_agree_through_the_protocol(engine_home: Path, network: str) -> None:
    """Both engines satisfy Engine, describe themselves, and give the same named outputs at batch 2."""
    torch_engine, ort_engine = open_engine(network, "torch"), open_engine(network, "onnxruntime")
    net = NETWORKS[network]
    feeds = net.example(torch_engine.module, 2, np.random.default_rng(0))
    a, b = torch_engine.run(feeds), ort_engine.run(feeds)
    for e in (torch_engine, ort_engine):
        assert isinstance(e, Engine)
        assert e.describe()["network"] == network and e.describe()["backend"] == e.backend
    assert set(a) == set(b) == set(net.outputs)
    for k in net.outputs:
        assert a[k].shape[0] == 2
        np.testing.assert_allclose(b[k], a[k], atol=1e-4, rtol=0)
    assert ort_engine.describe()["providers"][-1] == "CPUExecutionProvider"


def test_auto_backend_is_onnxruntime_until_measured_then_the_fastest(engine_home: Path) -> None:
    """Without measurements 'auto' is ONNX Runtime; with this machine's measurements it is the faster
    backend per network; a backend that is not installed is refused with a UserError."""
    assert resolve_backend("auto", "generator") == "onnxruntime"
    record_measurements({"generator": {"torch": 8.0, "onnxruntime": 3.5}, "syncformer": {"torch": 1.0,
                                                                                          "onnxruntime": 2.0}},
                        threads=1)
    assert resolve_backend("auto", "generator") == "onnxruntime"
    assert resolve_backend("auto", "syncformer") == "torch"
    assert resolve_backend("auto", "syncformer", threads=2) == "onnxruntime"    # measured at 1 thread only
    with pytest.raises(UserError, match="--backend tensorrt: not available"):
        resolve_backend("tensorrt", "generator")
    with pytest.raises(UserError, match="choose one of"):
        resolve_backend("cuda", "generator")


# --- TensorRT: the CPU-side logic (no TensorRT here) -------------------------------------------

def trt_meta(network: str, graph: Path) -> dict:
    net = NETWORKS[network]
    return {"model": network, **onnx_io(graph), "onnx_sha256": "ab" * 32,
            "dynamic_axes": net.axes_meta()}


@pytest.fixture(scope="module")
def syncformer_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from presenter.export.registry import export_network

    return export_network("syncformer", tmp_path_factory.mktemp("trt"))[0]


def test_tensorrt_profiles_come_from_the_dynamic_axes(syncformer_graph: Path) -> None:
    """The SyncFormer step's profile: batch 1/8/64 and frames 1/33/128, fixed widths kept."""
    profiles = profile_shapes(trt_meta("syncformer", syncformer_graph))
    assert profiles == {"features": ((1, 1, 768), (8, 33, 768), (64, 128, 768)),
                        "style": ((1, 64), (8, 64), (64, 64))}
    check_within_profile("features", (1, 33, 768), profiles["features"])
    with pytest.raises(ValueError, match="'features' has shape \\(1, 200, 768\\)"):
        check_within_profile("features", (1, 200, 768), profiles["features"])


def test_tensorrt_bindings_are_aligned_disjoint_and_sized_for_the_max_shapes(syncformer_graph: Path) -> None:
    """Inputs then outputs, each slot 256-byte aligned, not overlapping, holding its max shape in float32."""
    layout = binding_layout(trt_meta("syncformer", syncformer_graph))
    assert [(b.name, b.is_input) for b in layout] == [("features", True), ("style", True), ("displacement", False)]
    assert layout[0].max_shape == (64, 128, 768) and layout[2].max_shape == (64, 128, 468, 3)
    for b in layout:
        assert b.offset % ALIGN_BYTES == 0 and b.nbytes == 4 * int(np.prod(b.max_shape))
    for a, b in zip(layout, layout[1:]):
        assert a.offset + a.nbytes <= b.offset
    assert arena_bytes(layout) >= layout[-1].offset + layout[-1].nbytes


def test_tensorrt_plan_key_changes_with_gpu_version_graph_precision_and_profiles(syncformer_graph: Path,
                                                                                 tmp_path: Path) -> None:
    """A plan is reused only for the same GPU model, TensorRT version, ONNX file, precision and profiles."""
    profiles = profile_shapes(trt_meta("syncformer", syncformer_graph))
    base = {"gpu_name": "NVIDIA H200", "trt_version": "10.13.0", "onnx_sha256": "ab" * 32, "fp16": True,
            "profiles": profiles}
    key = plan_cache_key(**base)
    assert key == plan_cache_key(**dict(base))
    changed = [{"gpu_name": "NVIDIA A100-SXM4-80GB"}, {"trt_version": "10.14.1"}, {"onnx_sha256": "cd" * 32},
               {"fp16": False}, {"profiles": {**profiles, "style": ((1, 64), (1, 64), (1, 64))}}]
    keys = {plan_cache_key(**{**base, **c}) for c in changed}
    assert key not in keys and len(keys) == len(changed)
    assert plan_path("syncformer", key, tmp_path) == tmp_path / f"syncformer-{key[:16]}.plan"


def test_tensorrt_engine_runs_on_a_gpu(engine_home: Path) -> None:
    """On a CUDA GPU with TensorRT: the fp16 plan is built once, cached, and matches torch (skipped elsewhere)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("tensorrt") is None or not torch.cuda.is_available():
        reason = "tensorrt is not installed" if importlib.util.find_spec("tensorrt") is None else "no CUDA GPU"
        print(f"SKIP TensorRT GPU test: {reason}")
        pytest.skip(f"TensorRT GPU test: {reason} (the CPU-side logic is tested above)")
    engine = open_engine("syncformer", "tensorrt")
    feeds = NETWORKS["syncformer"].example(None, 2, np.random.default_rng(0))
    ref = open_engine("syncformer", "torch").run(feeds)["displacement"]
    out = engine.run(feeds)["displacement"]
    assert 10 * np.abs(out - ref).max() < 0.05          # fp16: within 0.05 mm
    assert Path(engine.describe()["plan"]).is_file()
    assert json.loads(json.dumps(engine.describe()))["precision"] == "fp16"
