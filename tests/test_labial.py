"""The bilabial-closure probe and its lip gate (`presenter.motion.labial`)."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.face.canonical import LOWER_INNER_LIP, N_VERTICES, UPPER_INNER_LIP
from presenter.motion.labial import GateConfig, LabialGate, gate_lips, load_probe
from presenter.motion.mouth import REST_GAP_CM


def _gap(disp: np.ndarray) -> np.ndarray:
    return REST_GAP_CM + disp[:, UPPER_INNER_LIP, 1] - disp[:, LOWER_INNER_LIP, 1]


@pytest.fixture(scope="module")
def probe():
    return load_probe()


def test_probe_tells_bilabials_from_other_stops_on_held_out_real_speech(probe) -> None:
    """On pocketsphinx's read speech (never used in training), frames inside p/b/m get a higher
    P(bilabial) than frames inside t/d/k/g: frame AUC measured 0.967; held to 0.85."""
    from presenter.audio.features import FeatureConfig, features_for_clip
    from presenter.data.align_real import real_validation_set
    from presenter.engines.onnxruntime import whisper_encode
    from presenter.offline.judge import auc

    encode, pos, neg = whisper_encode(1), [], []
    for clip in list(real_validation_set())[:5]:
        p = probe.bilabial(features_for_clip(clip.audio, FeatureConfig(), encode=encode))
        for phone, a, b in clip.phones:
            frames = p[int(a / 0.04 + 0.5):max(int(a / 0.04 + 0.5) + 1, int(b / 0.04))]
            (pos if phone.lower() in ("p", "b", "m") else neg if phone.lower() in ("t", "d", "k", "g") else [])\
                .extend(frames.tolist())
    assert len(pos) > 10 and len(neg) > 10
    assert auc(np.asarray(pos), np.asarray(neg)) > 0.85


def test_gate_opens_unlikely_bilabials_seals_likely_ones_and_leaves_rest_alone() -> None:
    rng = np.random.default_rng(0)
    disp = np.zeros((6, N_VERTICES, 3), np.float32)
    disp[1:] = rng.normal(0, 0.01, (5, N_VERTICES, 3))
    disp[1:, LOWER_INNER_LIP, 1] -= np.array([0.0, 0.0, 0.3, 0.3, 0.0], np.float32)   # lower lip down: gaps ~0.35 cm on 3, 4
    p = np.array([0.0, 0.0, 0.0, 0.9, 0.05, 0.3], np.float32)
    out = gate_lips(disp, p, GateConfig())
    gap = _gap(out)
    assert np.array_equal(out[0], disp[0])                       # rest (all zeros) stays rest
    assert gap[2] == pytest.approx(0.5, abs=1e-4)                 # low P (and low before): opened to open_cm
    assert gap[3] == pytest.approx(0.0, abs=1e-4)                 # high P: sealed
    assert gap[4] == pytest.approx(_gap(disp)[4], abs=1e-6)       # low P but the frame before was high: untouched
    assert gap[5] == pytest.approx(_gap(disp)[5], abs=1e-6)       # in between: untouched


def test_streaming_gate_equals_the_gate_over_the_whole_clip(probe) -> None:
    """Chunk by chunk (as the driver calls it, with a one-frame lead) = one call over the clip."""
    from presenter.motion.labial import stack_context

    rng = np.random.default_rng(1)
    feats = rng.normal(0, 1, (40, probe.cfg.feat_dim)).astype(np.float32)
    disp = rng.normal(0, 0.05, (40, N_VERTICES, 3)).astype(np.float32)
    lead = 1
    gate = LabialGate(probe, lead=lead)
    out, window = [], np.zeros((0, probe.cfg.feat_dim), np.float32)
    for a, b in ((0, 3), (3, 4), (4, 17), (17, 40)):
        window = np.concatenate([window, feats[a:b]])[-12:]
        out.append(gate(window, disp[a:b]))
    streamed = np.concatenate(out)
    # Output j sits at video frame j - lead: its probability reads features j - lead - past .. j - lead + future.
    x = stack_context(np.concatenate([np.repeat(feats[:1], lead, 0), feats]), probe.cfg.past, probe.cfg.future)[:40]
    import torch

    with torch.inference_mode():
        p = probe.probs(torch.from_numpy(x))[:, 2].numpy()
    np.testing.assert_allclose(streamed[lead + 2:], gate_lips(disp, p)[lead + 2:], atol=1e-5)


def test_training_without_data_or_with_a_bad_config_says_what_to_do(tmp_path, capsys, monkeypatch) -> None:
    """An empty data folder: exit 2 naming it and the command that makes data, nothing written;
    a probe whose config.json has an unknown key: a UserError naming the file and the key."""
    import json
    import shutil
    import sys

    from presenter.errors import UserError
    from presenter.motion.labial import default_weights_dir
    from presenter.train.labial import main

    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["labial", "train", "--data", str(tmp_path / "empty"), "--out",
                                      str(tmp_path / "w")])
    assert main() == 2
    err = capsys.readouterr().err
    assert "empty: no shard-*.npz" in err and "presenter.train.labial data" in err
    assert not (tmp_path / "w").exists()

    bad = tmp_path / "bad"
    shutil.copytree(default_weights_dir(), bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "layers": 3}))
    with pytest.raises(UserError, match=r"bad/config\.json.*layers"):
        load_probe(bad)
