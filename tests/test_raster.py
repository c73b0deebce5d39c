"""Z-buffered rasteriser: the numba kernel against the numpy reference, z-buffering, coverage rules."""
from __future__ import annotations

import numpy as np
import pytest

from presenter.face.canonical import NOSE_TIP, canonical_mesh
from presenter.face.raster import Raster, rasterise, warmup

SIZE = (96, 112)   # (H, W), not square so that swapped axes show


def random_mesh(seed: int, *, n_faces: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random soup (V, 3), (F, 3), (V, 4): big and small triangles, some crossing or outside the
    image border, some of zero area (repeated or collinear vertices), overlapping at random depths."""
    rng = np.random.default_rng(seed)
    H, W = SIZE
    n_big = n_faces // 5
    n_tiny = n_faces - n_big
    centres = rng.uniform([-20, -20, 0], [W + 20, H + 20, 10], size=(n_faces, 1, 3))
    spread = np.where(np.arange(n_faces) < n_big, 25.0, 1.5)[:, None, None] * [1, 1, 0.1]
    verts = (centres + spread * rng.normal(size=(n_faces, 3, 3))).reshape(-1, 3)
    tris = np.arange(len(verts)).reshape(-1, 3)
    tris[:10, 2] = tris[:10, 1]                                        # repeated vertex
    verts[tris[10:20, 2]] = 0.5 * (verts[tris[10:20, 0]] + verts[tris[10:20, 1]])  # collinear
    attrs = rng.normal(size=(len(verts), 4))
    return verts, tris, attrs


def require_fast(impl: str = "fast") -> None:
    """impl="fast" silently runs the numpy reference when numba cannot compile the kernels; a
    "fast" test must then fail, not compare the reference with itself."""
    if impl == "fast":
        assert warmup(), "the numba kernels did not compile (see the logged warning): 'fast' would run 'ref'"


def test_fast_path_is_the_compiled_numba_kernel() -> None:
    """The numba kernels compile here, and "fast" runs them (not the reference)."""
    from numba.core.registry import CPUDispatcher

    from presenter.face.raster import _fast_kernels

    require_fast()
    assert all(isinstance(k, CPUDispatcher) for k in _fast_kernels())


def assert_rasters_match(fast: Raster, ref: Raster) -> None:
    """Same coverage and winners exactly; depth and attributes to float32 rounding."""
    require_fast()
    np.testing.assert_array_equal(fast.tri_id, ref.tri_id)
    np.testing.assert_array_equal(fast.depth[~ref.coverage], np.inf)
    np.testing.assert_allclose(fast.depth, ref.depth, rtol=0, atol=1e-5)
    np.testing.assert_allclose(fast.attrs, ref.attrs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_fast_raster_matches_reference_on_random_soup(seed: int) -> None:
    """The numba kernel draws the same triangles, depths and attributes as the numpy reference
    on overlapping, border-crossing, tiny and degenerate triangles."""
    verts, tris, attrs = random_mesh(seed)
    ref = rasterise(verts, tris, attrs, SIZE, impl="ref")
    fast = rasterise(verts, tris, attrs, SIZE, impl="fast")
    assert 0.3 < ref.coverage.mean() < 0.95, "the soup should cover part of the image"
    assert_rasters_match(fast, ref)


@pytest.mark.parametrize("seed", range(2))
def test_fast_raster_matches_reference_on_pixel_centre_ties(seed: int) -> None:
    """With vertices on pixel centres and edges, many centres lie exactly on triangle edges:
    both implementations apply the same tie rule, pixel for pixel."""
    rng = np.random.default_rng(seed)
    H, W = SIZE
    verts = np.concatenate([rng.integers(-8, 2 * W + 8, size=(600, 2)) / 2,          # half-pixel grid
                            rng.uniform(0, 10, size=(600, 1))], axis=1)
    tris = np.arange(600).reshape(-1, 3)
    attrs = rng.normal(size=(600, 2))
    assert_rasters_match(rasterise(verts, tris, attrs, SIZE, impl="fast"),
                         rasterise(verts, tris, attrs, SIZE, impl="ref"))


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_nearer_triangle_wins_in_either_draw_order(impl: str) -> None:
    """Where two triangles overlap, the one with the smaller z is visible whichever is drawn first."""
    require_fast(impl)
    near = [[10, 10, 1.0], [60, 15, 1.0], [20, 60, 1.0]]
    far = [[5, 5, 5.0], [70, 40, 5.0], [30, 70, 5.0]]
    for verts, near_id in ((np.array(near + far), 0), (np.array(far + near), 1)):
        attrs = verts[:, 2:]                          # the attribute is the depth: 1 near, 5 far
        r = rasterise(verts, np.array([[0, 1, 2], [3, 4, 5]]), attrs, (80, 80), impl=impl)
        both = np.zeros((80, 80), dtype=bool)
        both[20:30, 20:30] = True                      # inside both triangles
        assert np.all(r.tri_id[both] == near_id)
        np.testing.assert_allclose(r.depth[both], 1.0, atol=1e-6)
        np.testing.assert_allclose(r.attrs[both], 1.0, atol=1e-6)


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_covered_area_matches_analytic_area(impl: str) -> None:
    """A triangle covers as many pixels as its area, up to the pixels its boundary crosses
    (bound: half its perimeter + 2), in both windings."""
    require_fast(impl)
    rng = np.random.default_rng(7)
    for _ in range(20):
        p = rng.uniform(0, 100, size=(3, 2))
        (ax, ay), (bx, by) = p[1] - p[0], p[2] - p[0]
        area = 0.5 * abs(ax * by - ay * bx)
        perimeter = sum(np.linalg.norm(p[k] - p[k - 1]) for k in range(3))
        verts = np.concatenate([p, np.zeros((3, 1))], axis=1)
        for tri in ([0, 1, 2], [0, 2, 1]):
            r = rasterise(verts, np.array([tri]), np.zeros((3, 1)), (100, 100), impl=impl)
            assert abs(int(r.coverage.sum()) - area) <= 0.5 * perimeter + 2


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_shared_edges_draw_each_pixel_once(impl: str) -> None:
    """A jittered grid of quads split into triangles, all at one depth: drawn one triangle at a time,
    every pixel inside the grid is covered exactly once (no cracks, no double coverage), including
    pixel centres exactly on shared edges and vertices."""
    require_fast(impl)
    rng = np.random.default_rng(3)
    n = 7
    gy, gx = np.mgrid[0:n + 1, 0:n + 1] * 8.0 + 4.0                 # 4 .. 60 px
    jitter = rng.integers(-4, 5, size=(2, n + 1, n + 1)) / 2.0     # keep ties: half-pixel steps
    jitter[:, [0, -1], :] = 0
    jitter[:, :, [0, -1]] = 0                                       # square outline
    verts = np.stack([(gx + jitter[0]).ravel(), (gy + jitter[1]).ravel(), np.zeros(gx.size)], axis=1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    tris = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    count = np.zeros((64, 64), dtype=int)
    for tri in tris:
        count += rasterise(verts, tri[None], np.zeros((len(verts), 1)), (64, 64), impl=impl).coverage
    inside = np.zeros((64, 64), dtype=bool)
    inside[4:60, 4:60] = True                                       # centres 4.5 .. 59.5; x = 60 is the right edge
    np.testing.assert_array_equal(count, inside.astype(int))


@pytest.mark.parametrize("impl", ["ref", "fast"])
def test_triangles_outside_or_degenerate_draw_nothing(impl: str) -> None:
    """Triangles wholly outside the image, of zero area, or with non-finite vertices leave it empty."""
    require_fast(impl)
    verts = np.array([[-50, -50, 0], [-10, -40, 0], [-30, -5, 0],          # left of and above the image
                      [10, 10, 0], [20, 20, 0], [30, 30, 0],              # collinear
                      [np.nan, 5, 0], [30, 5, 0], [5, 30, 0]], dtype=float)
    r = rasterise(verts, np.arange(9).reshape(3, 3), np.ones((9, 2)), (40, 40), impl=impl)
    assert not r.coverage.any()
    assert np.all(np.isinf(r.depth)) and not r.attrs.any()


def test_face_mesh_drawn_frontally_covers_the_face_region() -> None:
    """The canonical mesh scaled into a 128 px crop covers a face-sized blob centred in the crop,
    and the nose tip's pixel shows a triangle that uses the nose-tip vertex."""
    mesh = canonical_mesh()
    v = mesh.vertices.astype(np.float64)
    scale = 110 / np.ptp(v[:, 1])
    verts = np.stack([64 + scale * v[:, 0], 64 - scale * v[:, 1], -scale * v[:, 2]], axis=1)
    r = rasterise(verts, mesh.triangles, mesh.uv, (128, 128))
    assert 0.4 < r.coverage.mean() < 0.8
    rows, cols = np.nonzero(r.coverage)
    assert abs(rows.mean() - 64) < 6 and abs(cols.mean() - 64) < 2
    nose = r.tri_id[int(verts[NOSE_TIP, 1]), int(verts[NOSE_TIP, 0])]
    assert NOSE_TIP in mesh.triangles[nose]
