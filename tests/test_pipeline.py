"""Choosing the live parts: the learned ones by default, the baselines on request, clear errors."""
from __future__ import annotations

import pytest

from presenter.errors import UserError
from presenter.render.generator import default_weights_dir as generator_weights
from presenter.stream.pipeline import load_pipeline


def test_auto_picks_the_shipped_syncformer_and_names_both_parts(live_pipeline) -> None:
    """With the SyncFormer's weights installed (they ship), auto drives the mouth with it; the frames'
    labels name the driver and the renderer."""
    p = live_pipeline
    assert p.engine == "syncformer" and p.driver_name == "Style-SyncFormer"
    want = "generator" if (generator_weights() / "model.safetensors").is_file() else "baseline"
    assert p.renderer_kind == want
    assert any("SyncFormer" in label for label in p.labels) and p.renderer.synthetic_label in p.labels


@pytest.mark.parametrize("kwargs, flag", [({"engine": "magic"}, "--engine"), ({"renderer": "magic"}, "--renderer")])
def test_unknown_parts_are_refused_by_name(live_home, monkeypatch, kwargs, flag) -> None:
    monkeypatch.setenv("PRESENTER_HOME", str(live_home))
    with pytest.raises(UserError, match=flag):
        load_pipeline("default", **kwargs)


def test_generator_without_weights_says_how_to_get_them(live_home, monkeypatch, tmp_path) -> None:
    """With no generator weights installed, --renderer generator is refused with how to get them."""
    import presenter.render.generator as gen

    monkeypatch.setenv("PRESENTER_HOME", str(live_home))
    monkeypatch.setattr(gen, "default_weights_dir", lambda: tmp_path)
    with pytest.raises(UserError, match="presenter train generator"):
        load_pipeline("default", renderer="generator")
