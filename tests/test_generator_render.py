"""Run time of the generator: ONNX export parity and the GeneratorRenderer behind the Renderer seam."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from presenter.models.generator import Generator, GeneratorConfig, save_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARITY_ATOL = 1e-4   # ORT vs torch, images in [-1, 1]: measured about 2e-7 on random weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained live generator with non-trivial styles, saved like shipped weights."""
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.live())
    with torch.no_grad():
        g.affine.weight.normal_(0, 0.05)       # the zero init makes every style 1: give the styles something to do
    d = tmp_path_factory.mktemp("gen") / "weights"
    save_generator(g.eval(), d, card="test weights\n")
    return d


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_export_matches_torch(weights: Path, tmp_path: Path, batch: int) -> None:
    """The exported per-frame graph gives the torch output at any batch size (dynamic batch axis)."""
    from presenter.engines.onnxruntime import session
    from presenter.export.generator import export_generator_onnx
    from presenter.models.generator import load_generator

    g = load_generator(weights)
    sess = session(export_generator_onnx(g, tmp_path / "g.onnx"), threads=1)
    gen = torch.Generator().manual_seed(batch)
    S = g.cfg.crop_px
    x = {"target": torch.rand(batch, 3, S, S, generator=gen) * 2 - 1, "mask": torch.rand(batch, 1, S, S, generator=gen),
         "guidance": torch.rand(batch, 4, S, S, generator=gen)}
    with torch.no_grad():
        x["styles"] = g.styles(torch.rand(batch, 3, S, S, generator=gen) * 2 - 1)
        ref = g(**x).numpy()
    out = sess.run(None, {k: v.numpy() for k, v in x.items()})[0]
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=0, atol=PARITY_ATOL)


def test_colour_match_removes_an_offset_of_the_painted_part() -> None:
    """A painted part that is uniformly too bright by 20 levels is brought back to the target's colour."""
    from presenter.render.generator import colour_match

    target = np.full((32, 32, 3), 100.0, np.float32)
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1.0
    mask[6:26, 6:26] = np.maximum(mask[6:26, 6:26], 0.3)                          # a soft edge
    image = target + 20.0 * mask[..., None]
    np.testing.assert_allclose(colour_match(image, target, mask), target, atol=1e-4)


@pytest.fixture(scope="module")
def renderers(astronaut_pack: Path, weights: Path, tmp_path_factory: pytest.TempPathFactory):
    """(pack, fast renderer, ref renderer) on the astronaut pack, engines cached in a temporary home."""
    from presenter.avatar.pack import load_pack
    from presenter.render.generator import GeneratorRenderer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRESENTER_HOME", str(tmp_path_factory.mktemp("home")))
        pack = load_pack(astronaut_pack)
        return pack, GeneratorRenderer(pack, weights, impl="fast"), GeneratorRenderer(pack, weights, impl="ref")


def test_renderer_seam(renderers) -> None:
    """render(i, None) is the idle frame; a mouth pose or SyncFormer displacements change only the lower face."""
    from presenter.face.masks import SUBNASALE
    from presenter.motion.mouth import JAW, rest
    from presenter.render.base import Renderer

    pack, fast, _ = renderers
    assert isinstance(fast.name, str) and "SYNTHETIC" in fast.synthetic_label
    renderer: Renderer = fast
    assert np.array_equal(renderer.render(1, None), pack.frames[1])
    pose = rest()
    pose[JAW] = 0.8
    for mouth in (pose, np.zeros((468, 3), np.float32)):
        frame = renderer.render(1 + pack.n_frames, mouth)
        assert frame.shape == pack.frames[1].shape and frame.dtype == np.uint8
        changed = np.abs(frame.astype(int) - pack.frames[1]).max(-1) > 0
        assert changed.any()
        # Only the lower face changes: nothing above 40 % of the way from the nostrils to the eyes
        # (the warp's lower-face mask and its feather).
        ys, _ = np.nonzero(changed)
        nose = pack.face["verts_px"][1, SUBNASALE, 1]
        eyes = pack.face["verts_px"][1, [33, 263], 1].max()
        assert ys.min() >= nose - 0.4 * (nose - eyes), (ys.min(), nose, eyes)


def test_paint_mask_follows_the_commanded_lips(renderers) -> None:
    """The generator paints the commanded mouth's lips mask: it grows with the jaw and covers the posed lips."""
    from presenter.face.align import to_mouth_window
    from presenter.face.canonical import LIPS_OUTER
    from presenter.motion.mouth import JAW, rest

    _, fast, _ = renderers
    areas = []
    for jaw in (0.0, 0.8):
        pose = rest()
        pose[JAW] = jaw
        _, _, verts = fast.mouth_crop(0, pose)
        mask = fast.paint_mask(verts)
        lips = np.round(to_mouth_window(verts)[list(LIPS_OUTER), :2]).astype(int)
        assert mask[lips[:, 1], lips[:, 0]].min() > 0.9
        areas.append(mask.sum())
    assert areas[1] > 1.2 * areas[0]


def test_fast_renderer_matches_reference(renderers) -> None:
    """The ONNX Runtime path draws the same frame as the PyTorch path, within one grey level."""
    from presenter.motion.mouth import JAW, ROUND, rest

    _, fast, ref = renderers
    pose = rest()
    pose[JAW], pose[ROUND] = 0.5, 0.6
    a, b = fast.render(2, pose), ref.render(2, pose)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_missing_weights_say_how_to_train(astronaut_pack: Path, tmp_path: Path) -> None:
    """A weights folder without config.json/model.safetensors is a UserError that names the trainer."""
    from presenter.avatar.pack import load_pack
    from presenter.errors import UserError
    from presenter.render.generator import GeneratorRenderer

    with pytest.raises(UserError, match="presenter train generator"):
        GeneratorRenderer(load_pack(astronaut_pack), tmp_path)


def test_live_per_frame_cost_is_in_budget() -> None:
    """The live preset's per-frame graph costs 0.1-0.6 GFLOP (DESIGN section 3's MobileStyleGAN-type budget)
    and its reference encoder, run once per avatar, is not part of it."""
    from presenter.export.generator import per_frame_flops

    g = Generator(GeneratorConfig.live())
    assert 0.1e9 <= per_frame_flops(g) <= 0.6e9


def test_style_codes_are_stored_in_the_pack_per_weights(astronaut_pack: Path, weights: Path, tmp_path: Path) -> None:
    """A pack without style codes gets them on first use (an old pack is upgraded); a second renderer reads
    them back; other weights are not given the first weights' codes."""
    import shutil

    from presenter.avatar.pack import STYLES, load_pack, read_styles
    from presenter.render.generator import GeneratorRenderer, reference_styles

    pack = load_pack(shutil.copytree(astronaut_pack, tmp_path / "pack"))
    (pack.root / STYLES).unlink(missing_ok=True)
    first = GeneratorRenderer(pack, weights, impl="ref")
    key = (weights / "model.sha256").read_text().split()[0]
    stored = read_styles(pack, key)
    assert stored is not None and np.array_equal(stored, first.styles)
    np.testing.assert_allclose(stored, reference_styles(pack, first.model), atol=1e-6)
    assert read_styles(pack, "0" * 64) is None
    np.savez(pack.root / STYLES, styles=np.zeros_like(stored), weights=np.array(key))   # a marker: read, not recomputed
    assert np.array_equal(GeneratorRenderer(pack, weights, impl="ref").styles, np.zeros_like(stored))
