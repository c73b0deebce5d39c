"""`presenter eval generator`'s measures: mouth PSNR/SSIM inside a mask and the Frechet distance."""
from __future__ import annotations

import numpy as np

from presenter.train.evaluate_generator import frechet_distance, mouth_psnr_ssim


def test_mouth_scores_look_only_inside_the_mask() -> None:
    """Identical windows score SSIM 1; noise outside the mask changes nothing; noise inside lowers both."""
    rng = np.random.default_rng(0)
    a = rng.integers(60, 200, (128, 128, 3), dtype=np.uint8)
    mask = np.zeros((128, 128), bool)
    mask[40:100, 30:100] = True
    psnr_same, ssim_same = mouth_psnr_ssim(a, a, mask)
    assert ssim_same > 0.999 and psnr_same > 60
    outside = a.copy()
    outside[:20] = 0
    assert mouth_psnr_ssim(a, outside, mask)[0] > 60
    inside = np.clip(a.astype(int) + rng.normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    psnr, ssim = mouth_psnr_ssim(a, inside, mask)
    assert 18 < psnr < 30 and ssim < 0.9


def test_frechet_distance_is_zero_for_a_set_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 8))
    assert abs(frechet_distance(x, x)) < 1e-6
    near, far = frechet_distance(x, x + 0.5), frechet_distance(x, x + 2.0)
    assert np.isclose(near, 8 * 0.25, rtol=0.05) and far > 10 * near / 2
