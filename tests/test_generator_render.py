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
    from presenter.face.align import MOUTH_WINDOW_256, warp_points
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
        ys, xs = np.nonzero(changed)
        # Every changed pixel lies inside the mouth window mapped back to the frame.
        x0, y0, side = MOUTH_WINDOW_256
        corners = np.array([[x0, y0], [x0 + side, y0], [x0, y0 + side], [x0 + side, y0 + side]], np.float32)
        to_frame = np.linalg.inv(np.vstack([pack.face["align_256"][1], [0, 0, 1]]))[:2]
        in_frame = warp_points(corners, to_frame)                                  # (4, 2) frame pixels
        (fx0, fy0), (fx1, fy1) = in_frame.min(0), in_frame.max(0)
        assert xs.min() >= fx0 - 2 and xs.max() <= fx1 + 2 and ys.min() >= fy0 - 2 and ys.max() <= fy1 + 2


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
