"""Style-SyncFormer: exact streaming, bounded look-ahead, style modulation, strict save/load."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from presenter.audio.features import FeatureConfig
from presenter.errors import UserError
from presenter.models.lipsync import LipSyncModel, load_lipsync
from presenter.models.style_encoder import StyleEncoderConfig
from presenter.models.syncformer import SyncFormer, SyncFormerConfig

CFG = SyncFormerConfig(d_model=64, n_layers=2, n_heads=4, context_frames=4, style_dim=16, n_basis=8, dropout=0.0)


def _random_model(seed: int = 0) -> SyncFormer:
    torch.manual_seed(seed)
    m = SyncFormer(CFG).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
        m.set_basis(torch.randn(CFG.n_basis, CFG.n_vertices * 3) * 0.01, torch.ones(CFG.n_basis))
    return m


def test_window_of_receptive_field_reproduces_offline() -> None:
    """Running only the last receptive_frames feature frames gives the same last output as the whole sequence."""
    m = _random_model()
    f, s = torch.randn(1, 40, CFG.feat_dim), torch.randn(1, CFG.style_dim)
    full = m.coefficients(f, s)
    for end in (CFG.receptive_frames, 25, 40):
        win = m.coefficients(f[:, end - CFG.receptive_frames:end], s)
        torch.testing.assert_close(win[:, -1], full[:, end - 1], atol=1e-5, rtol=0)


def test_no_future_leak_and_bounded_past() -> None:
    """Frame t's output ignores feature frames after t and before t - n_layers * context_frames."""
    m = _random_model(1)
    f, s = torch.randn(1, 30, CFG.feat_dim), torch.randn(1, CFG.style_dim)
    base = m.coefficients(f, s)[0, 20]
    for k, should_change in ((21, False), (29, False), (20, True), (20 - CFG.n_layers * CFG.context_frames, True),
                             (20 - CFG.n_layers * CFG.context_frames - 1, False)):
        g = f.clone()
        g[:, k] += 3.0
        changed = (m.coefficients(g, s)[0, 20] - base).abs().max().item() > 1e-6
        assert changed == should_change, (k, changed)


def test_style_code_changes_the_motion() -> None:
    m = _random_model(2)
    f = torch.randn(1, 20, CFG.feat_dim)
    a, b = m(f, torch.randn(1, CFG.style_dim)), m(f, torch.randn(1, CFG.style_dim))
    assert (a - b).abs().max() > 1e-4


def test_save_load_round_trip_and_config_errors(tmp_path: Path) -> None:
    """A saved model loads strictly and predicts identically; an unknown config key is refused by name."""
    torch.manual_seed(0)
    model = LipSyncModel(CFG, StyleEncoderConfig(style_dim=CFG.style_dim, hidden=32), FeatureConfig())
    model.eval()
    model.save(tmp_path / "m", card="test card\n")
    loaded = load_lipsync(tmp_path / "m")
    f, ref = torch.randn(1, 12, CFG.feat_dim), torch.randn(1, 30, 468, 3) * 0.1
    torch.testing.assert_close(loaded(f, ref), model(f, ref))
    cfg = (tmp_path / "m" / "config.json").read_text().replace('"n_layers"', '"n_layerz"')
    (tmp_path / "m" / "config.json").write_text(cfg)
    with pytest.raises(UserError, match="n_layerz"):
        load_lipsync(tmp_path / "m")
    with pytest.raises(UserError, match="no lip-sync model"):
        load_lipsync(tmp_path / "absent")


def test_streaming_driver_matches_offline_model() -> None:
    """The streaming driver, fed 40 ms chunks, returns the displacements the offline model gives for the clip,
    led by lead_frames."""
    from presenter.audio.features import features_for_clip, torch_encode
    from presenter.motion.syncformer_driver import REST_SNAP_CM, SyncFormerDriver

    torch.manual_seed(0)
    model = LipSyncModel(SyncFormerConfig(d_model=64, n_layers=2, n_heads=4, context_frames=4, style_dim=16,
                                          n_basis=8, dropout=0.0),
                         StyleEncoderConfig(style_dim=16, hidden=32), FeatureConfig()).eval()
    with torch.no_grad():
        for p in model.sync.parameters():
            p.normal_(0, 0.2)
        model.sync.set_basis(torch.randn(8, 468 * 3), torch.ones(8))
    encode = torch_encode()
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    feats = torch.from_numpy(features_for_clip(audio, model.feat_cfg, encode=encode))
    with torch.no_grad():
        offline = model.sync(feats[None], model.default_style[None])[0].numpy()
    offline[np.abs(offline).max(axis=(1, 2)) < REST_SNAP_CM] = 0.0
    for lead in (0, 1, 2):
        # Frame k shows the model's frame k + lead; the frames past the clip rest; none goes missing.
        driver = SyncFormerDriver(model, encode=encode, lead_frames=lead)
        assert driver.lookahead_s == pytest.approx(model.feat_cfg.lookahead_s + 0.04 * lead)
        out = np.concatenate([driver.push(audio[i:i + 640]) for i in range(0, len(audio), 640)] + [driver.flush()])
        want = np.concatenate([offline[lead:], np.zeros_like(offline[:lead])])
        assert out.shape == offline.shape
        np.testing.assert_allclose(out, want, atol=1e-4)
        # A second utterance on the same driver is led the same way.
        again = np.concatenate([driver.push(audio[i:i + 640]) for i in range(0, len(audio), 640)] + [driver.flush()])
        assert again.shape == offline.shape
