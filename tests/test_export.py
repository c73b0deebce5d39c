"""ONNX export: `presenter export` writes checked graphs with meta.json, and every exported network
gives the PyTorch output on real inputs (read speech from Debian's pocketsphinx-testdata, the
default avatar's frames and styles), judged also downstream: mesh displacement in mm for the
SyncFormer and its style encoder, PSNR of the rendered mouth window for the generator.

Measured 2026-12-03 (ONNX Runtime 1.32, torch 2.13): syncformer 4e-7 cm, whisper ~1e-5, generator
~2e-7, generator-styles ~2e-6 max abs error. The bounds below leave 100x or more room for
float reordering and fail on any wrong weight, op or axis.
"""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from presenter.cli import main
from presenter.engines.onnxruntime import session
from presenter.export.registry import NETWORKS, export_network, sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0880.wav")
needs_speech = pytest.mark.skipif(not SPEECH.is_file(), reason=f"pocketsphinx-testdata is not installed ({SPEECH})")

STEP_MAX_MM = 1e-3        # SyncFormer: largest vertex displacement difference, mm (measured 4e-6 mm)
STYLE_MAX_ABS = 1e-4      # style code, unit scale (measured ~1e-7)
WHISPER_MAX_ABS = 1e-3    # encoder features, unit scale (measured ~1.5e-5)
GENERATOR_MAX_ABS = 1e-4  # image in [-1, 1] (measured ~2e-7)
GENERATOR_MIN_PSNR = 60.0  # dB, mouth window in [0, 255] (measured > 100 dB)


def speech() -> np.ndarray:
    """The read-speech file as float32 at 16 kHz."""
    with wave.open(str(SPEECH)) as w:
        assert w.getframerate() == 16000
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every network exported through the CLI into one folder."""
    out = tmp_path_factory.mktemp("onnx")
    assert main(["export", "all", "--format", "onnx", "-o", str(out)]) == 0
    return out


def run_onnx(out: Path, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return session(out / f"{name}.onnx", 1).run(None, feeds)[0]


def test_export_writes_checked_graph_and_meta(exported: Path) -> None:
    """Each model has MODEL.onnx that onnx.checker accepts and MODEL.meta.json whose hashes, names and
    dynamic axes describe it; no temporary file is left behind."""
    import onnx

    for name, net in NETWORKS.items():
        path, meta = exported / f"{name}.onnx", json.loads((exported / f"{name}.meta.json").read_text())
        onnx.checker.check_model(str(path), full_check=True)
        assert meta["model"] == name and meta["format"] == "onnx" and meta["opset"] == 17
        assert meta["onnx_sha256"] == sha256_file(path)
        assert meta["source_weights"]["sha256"] == net.source(None)[1]
        assert [t["name"] for t in meta["inputs"]] == list(net.inputs)
        assert [t["name"] for t in meta["outputs"]] == list(net.outputs)
        assert meta["inputs"][0]["shape"][0] == "batch" and "batch" in meta["dynamic_axes"]
        assert meta["parity"]["max_abs_error"] < 1e-3
    assert sorted(p.name for p in exported.iterdir() if p.name.startswith(".")) == []


def test_export_refuses_unknown_model_unwritable_folder_and_fp16(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown models, folders that cannot be made, --fp16, --int8 and bad opsets exit 2 with a message saying why."""
    from presenter.errors import UserError

    with pytest.raises(UserError, match="unknown model 'syncformerr'"):
        export_network("syncformerr", tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    assert main(["export", "syncformer", "-o", str(blocker / "sub")]) == 2
    assert "cannot create the folder" in capsys.readouterr().err
    assert main(["export", "syncformer", "-o", str(tmp_path / "x"), "--fp16"]) == 2
    assert "--fp16: not written" in capsys.readouterr().err
    assert main(["export", "syncformer", "-o", str(tmp_path / "x"), "--int8"]) == 2
    assert "--int8: not written" in capsys.readouterr().err
    assert main(["export", "syncformer", "-o", str(tmp_path / "x"), "--opset", "9"]) == 2
    assert "--opset 9" in capsys.readouterr().err
    assert main(["export", "syncformer", "-o", str(tmp_path / "x"), "--opset", "24"]) == 2
    assert "--opset 24" in capsys.readouterr().err
    assert not list((tmp_path / "x").glob("*.onnx"))


@pytest.fixture(scope="module")
def lipsync():
    from presenter.models.lipsync import load_lipsync

    return load_lipsync()


@pytest.fixture(scope="module")
def speech_features(lipsync) -> np.ndarray:
    """Speech features (T, 768) of the read-speech file, PyTorch encoder."""
    from presenter.audio.features import features_for_clip, torch_encode

    return features_for_clip(speech()[:16000 * 4], lipsync.feat_cfg, encode=torch_encode())


@needs_speech
def test_whisper_onnx_matches_torch_on_speech(exported: Path) -> None:
    """The exported speech encoder gives the PyTorch features on 1 s log-mel windows of real speech (batch 6)."""
    from presenter.audio.mel import log_mel
    from presenter.audio.whisper import load_encoder

    audio = speech()
    starts = np.linspace(0, len(audio) - 16000, 6).astype(int)
    mels = log_mel(np.stack([audio[s:s + 16000] for s in starts])).astype(np.float32)          # (6, 80, 100)
    with torch.inference_mode():
        ref = load_encoder()(torch.from_numpy(mels)).numpy()
    out = run_onnx(exported, "whisper", {"mel": mels})
    assert out.shape == ref.shape == (6, 50, 384)
    assert np.abs(out - ref).max() < WHISPER_MAX_ABS


@needs_speech
def test_syncformer_step_onnx_matches_torch_in_mm(exported: Path, lipsync, speech_features: np.ndarray) -> None:
    """Streaming windows of real speech features (33 frames, as the live driver runs) give the PyTorch
    mouth displacements within STEP_MAX_MM, at batch 1 and in one batch of all windows."""
    cfg = lipsync.sync.cfg
    R = cfg.receptive_frames
    windows = np.stack([speech_features[t - R:t] for t in range(R, len(speech_features), 3)])   # (B, 33, 768)
    style = np.repeat(lipsync.default_style[None].numpy(), len(windows), 0)
    with torch.inference_mode():
        ref = lipsync.sync(torch.from_numpy(windows), torch.from_numpy(style)).numpy()          # (B, 33, V, 3) cm
    assert np.abs(ref[:, -1]).max() > 0.05, "the speech should move the mouth (> 0.5 mm)"
    batched = run_onnx(exported, "syncformer", {"features": windows, "style": style})
    single = run_onnx(exported, "syncformer", {"features": windows[:1], "style": style[:1]})
    mm = 10 * np.linalg.norm(batched - ref, axis=-1).max()
    assert mm < STEP_MAX_MM, f"{mm:.2e} mm"
    assert 10 * np.linalg.norm(single - ref[:1], axis=-1).max() < STEP_MAX_MM


@needs_speech
def test_style_encoder_onnx_matches_torch_downstream(exported: Path, lipsync, speech_features: np.ndarray) -> None:
    """A reference clip (the SyncFormer's own motion on real speech) gives the PyTorch style code, and the
    mouths driven by either code differ by less than STEP_MAX_MM."""
    feats = torch.from_numpy(speech_features[None])
    with torch.inference_mode():
        reference = lipsync.sync(feats, lipsync.default_style[None])                            # (1, T, V, 3) cm
        ref_style = lipsync.style(reference)
    style = run_onnx(exported, "style-encoder", {"reference": reference.numpy()})
    assert np.abs(style - ref_style.numpy()).max() < STYLE_MAX_ABS
    with torch.inference_mode():
        a = lipsync.sync(feats, ref_style).numpy()
        b = lipsync.sync(feats, torch.from_numpy(style)).numpy()
    assert 10 * np.linalg.norm(a - b, axis=-1).max() < STEP_MAX_MM


@pytest.fixture(scope="module")
def avatar_windows(lipsync):
    """Generator inputs of the default avatar as the live renderer makes them: its cached styles and, for
    the 4 most open mouths the SyncFormer gives on real speech, the warped target window, paint mask
    and guidance (NCHW float32, batch 4)."""
    from presenter.avatar.create import default_pack
    from presenter.face.align import mouth_window, to_mouth_window
    from presenter.face.guidance import render_guidance
    from presenter.motion.syncformer_driver import SyncFormerDriver
    from presenter.render.generator import WINDOW, GeneratorRenderer
    from presenter.render.warp_baseline import WarpBaselineRenderer

    if not SPEECH.is_file():
        pytest.skip(f"pocketsphinx-testdata is not installed ({SPEECH})")
    pack = default_pack()
    renderer = GeneratorRenderer(pack, impl="ref")
    driver = SyncFormerDriver(lipsync, skip_silence=False)
    disp = np.concatenate([driver.push(speech()[:16000 * 3]), driver.flush()])
    frames = np.argsort(-np.abs(disp).max(axis=(1, 2)))[:4]
    warp = WarpBaselineRenderer(pack)
    target, mask, guidance = [], [], []
    for i in frames:
        warped, _, verts, _ = warp.warp(int(i), disp[i])
        target.append(mouth_window(warped).astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
        mask.append(renderer.paint_mask(verts)[None])
        guidance.append(render_guidance(to_mouth_window(verts), WINDOW).transpose(2, 0, 1))
    feeds = {"target": np.stack(target), "mask": np.stack(mask).astype(np.float32),
             "guidance": np.stack(guidance).astype(np.float32),
             "styles": np.repeat(renderer.styles, len(frames), 0).astype(np.float32)}
    return renderer, pack, feeds


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two images in [-1, 1] once mapped to [0, 255]."""
    mse = float(np.mean(((a - b) * 127.5) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def test_generator_onnx_matches_torch_on_the_default_avatar(exported: Path, avatar_windows) -> None:
    """The per-frame graph paints the default avatar's speaking mouths as PyTorch does: max abs error and
    the PSNR of the mouth window (batch 4 of real frames, and batch 1)."""
    renderer, _, feeds = avatar_windows
    assert feeds["mask"].max() > 0.9, "the lips mask should paint something"
    with torch.inference_mode():
        ref = renderer.model(*(torch.from_numpy(feeds[k]) for k in ("target", "mask", "guidance", "styles"))).numpy()
    out = run_onnx(exported, "generator", feeds)
    assert np.abs(out - ref).max() < GENERATOR_MAX_ABS
    assert psnr(out, ref) > GENERATOR_MIN_PSNR
    one = run_onnx(exported, "generator", {k: v[:1] for k, v in feeds.items()})
    assert psnr(one, ref[:1]) > GENERATOR_MIN_PSNR


def test_generator_styles_onnx_matches_torch_on_the_reference_frames(exported: Path, avatar_windows) -> None:
    """The reference-encoder graph gives the default avatar's styles from its reference frames; the
    frame painted with them keeps GENERATOR_MIN_PSNR against the PyTorch styles' frame."""
    from presenter.render.generator import CROP
    from presenter.face.align import mouth_window

    renderer, pack, feeds = avatar_windows
    crops = pack.crops[CROP]["crops"]
    refs = np.stack([mouth_window(crops[i % len(crops)]) for i in pack.reference_indices or [0]])
    x = (refs.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
    styles = run_onnx(exported, "generator-styles", {"reference": np.ascontiguousarray(x)})
    with torch.inference_mode():
        ref_styles = renderer.model.styles(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    assert np.abs(styles - ref_styles).max() < 1e-3
    np.testing.assert_allclose(styles.mean(0, keepdims=True), renderer.styles, atol=1e-3)
    with_onnx = {**feeds, "styles": np.repeat(styles.mean(0, keepdims=True), len(feeds["target"]), 0)}
    assert psnr(run_onnx(exported, "generator", with_onnx), run_onnx(exported, "generator", feeds)) > GENERATOR_MIN_PSNR
