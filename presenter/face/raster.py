"""Z-buffered triangle rasteriser: mesh in pixel coordinates -> depth, triangle ids, interpolated attributes.

Legend: V vertices, F triangles, C attribute channels, H x W image. Coordinates are pixels: x right,
y down, pixel (i, j) has its centre at (x, y) = (j + 0.5, i + 0.5); z is depth, smaller = nearer.

Rules (the same in both implementations, so they agree pixel for pixel on coverage):
- x, y are snapped to a 1/256 px grid (8 sub-pixel bits, as GPUs do). Edge functions are then exact
  in float64 while |x|, |y| < 2**17 px, which makes coverage, the tie rule below and the
  incremental stepping of the fast path exact.
- A pixel is covered when its centre is inside the triangle. A centre exactly on an edge belongs
  to the triangle only if that edge is a top or left edge, so a pixel on an edge shared by two
  triangles is drawn once: a closed mesh has no gaps and no double coverage.
- Both windings are drawn (no back-face culling); triangles of zero area after snapping, or with
  non-finite vertices, are skipped; the scan is clipped to the image.
- Depth and attributes are interpolated affinely (screen-space barycentrics). The nearest triangle
  wins (z, rounded to float32 as stored, strictly smaller); on a tie the earlier triangle keeps it.

`impl="ref"` is plain numpy, per triangle and vectorised over its bounding box. `impl="fast"` is a
numba kernel (`nogil`, so a server can run it in a worker thread): a bounding-box scan with
incremental edge functions that z-buffers triangle ids, then one pass over the covered pixels that
recomputes the visible triangle's barycentrics and blends its attributes. When numba cannot be
imported or compiled, "fast" falls back to "ref" after one warning.
"""
from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

logger = logging.getLogger(__name__)

SUBPIXEL_BITS = 8                        # vertices snap to 1 / 2**8 px
_SUBPIXEL = float(1 << SUBPIXEL_BITS)
_compile_lock = threading.Lock()         # two worker threads must not both compile


@dataclass(frozen=True)
class Raster:
    depth: np.ndarray   # (H, W) float32, z of the nearest surface; +inf where empty
    attrs: np.ndarray   # (H, W, C) float32, per-vertex attributes interpolated barycentrically; 0 where empty
    tri_id: np.ndarray  # (H, W) int32, index of the visible triangle; -1 where empty

    @property
    def coverage(self) -> np.ndarray:
        """(H, W) bool, True where a triangle was drawn."""
        return self.tri_id >= 0


def rasterise(verts: np.ndarray, triangles: np.ndarray, attrs: np.ndarray, size: tuple[int, int], *,
              impl: str = "fast") -> Raster:
    """Draw a triangle mesh with a z-buffer.

    verts (V, 3) float: x, y in pixels (x right, y down, pixel centres at half-integers), z depth,
    smaller = nearer. triangles (F, 3) int, indices into verts. attrs (V, C) float, interpolated
    over each visible triangle. size = (H, W). impl: "fast" (numba) or "ref" (numpy).
    """
    H, W = size
    if H <= 0 or W <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    verts = np.asarray(verts)
    triangles = np.asarray(triangles)
    attrs = np.asarray(attrs)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"verts must be (V, 3), got {verts.shape}")
    V = verts.shape[0]
    if triangles.ndim != 2 or triangles.shape[1] != 3:
        raise ValueError(f"triangles must be (F, 3), got {triangles.shape}")
    if attrs.ndim != 2 or attrs.shape[0] != V:
        raise ValueError(f"attrs must be (V={V}, C), got {attrs.shape}")
    if triangles.size and (triangles.min() < 0 or triangles.max() >= V):
        raise ValueError(f"triangle indices must lie in [0, {V}), got [{triangles.min()}, {triangles.max()}]")
    if impl not in ("ref", "fast"):
        raise ValueError(f"impl must be 'ref' or 'fast', got {impl!r}")

    xy = np.round(verts[:, :2].astype(np.float64) * _SUBPIXEL) / _SUBPIXEL     # (V, 2) snapped
    z = np.ascontiguousarray(verts[:, 2], dtype=np.float64)                     # (V,)
    tris = np.ascontiguousarray(triangles, dtype=np.int64)                      # (F, 3)
    vattrs = np.ascontiguousarray(attrs, dtype=np.float32)                      # (V, C)

    depth = np.full((H, W), np.inf, dtype=np.float32)
    tri_id = np.full((H, W), -1, dtype=np.int32)
    out = np.zeros((H, W, vattrs.shape[1]), dtype=np.float32)
    kernels = _fast_kernels() if impl == "fast" else None
    scan, interpolate = kernels if kernels is not None else (_scan_ref, _interpolate_ref)
    scan(xy, z, tris, depth, tri_id)
    interpolate(xy, tri_id, tris, vattrs, out)
    return Raster(depth=depth, attrs=out, tri_id=tri_id)


def warmup() -> bool:
    """Compile the fast kernels now (servers pay the JIT cost at startup); True when they are usable."""
    return _fast_kernels() is not None


# ----------------------------------------------------------------------------------------------
# Reference: numpy, one triangle at a time, vectorised over its bounding box.

def _edge(ax, ay, bx, by, px, py):
    """Edge function of a -> b at p: twice the signed area of (a, b, p). Scalars or arrays."""
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


def _owns_ties(ax: float, ay: float, bx: float, by: float) -> bool:
    """Top-left rule for edge a -> b of a positively wound triangle: does it own pixels on it?"""
    return by - ay < 0.0 or (by - ay == 0.0 and bx - ax > 0.0)


def _scan_ref(xy: np.ndarray, z: np.ndarray, tris: np.ndarray, depth: np.ndarray, tri_id: np.ndarray) -> None:
    """Z-buffer every triangle into depth (H, W) float32 and tri_id (H, W) int32, in place."""
    H, W = depth.shape
    for t, (i0, i1, i2) in enumerate(tris):
        (x0, y0), (x1, y1), (x2, y2) = xy[i0], xy[i1], xy[i2]
        area2 = _edge(x0, y0, x1, y1, x2, y2)
        if not (area2 != 0.0 and math.isfinite(area2)):
            continue
        if area2 < 0.0:                   # wind positively: the inside is where all edge functions > 0
            i1, i2, x1, y1, x2, y2, area2 = i2, i1, x2, y2, x1, y1, -area2
        c0 = max(np.ceil(min(x0, x1, x2) - 0.5), 0.0)
        c1 = min(np.floor(max(x0, x1, x2) - 0.5), W - 1.0)
        r0 = max(np.ceil(min(y0, y1, y2) - 0.5), 0.0)
        r1 = min(np.floor(max(y0, y1, y2) - 0.5), H - 1.0)
        if c0 > c1 or r0 > r1:
            continue
        rows, cols = slice(int(r0), int(r1) + 1), slice(int(c0), int(c1) + 1)
        py, px = np.mgrid[rows, cols] + 0.5                        # (h, w) pixel centres

        e0 = _edge(x1, y1, x2, y2, px, py)                         # weight of vertex 0, times area2
        e1 = _edge(x2, y2, x0, y0, px, py)
        e2 = _edge(x0, y0, x1, y1, px, py)
        inside = ((e0 > 0) | ((e0 == 0) & _owns_ties(x1, y1, x2, y2)))
        inside &= ((e1 > 0) | ((e1 == 0) & _owns_ties(x2, y2, x0, y0)))
        inside &= ((e2 > 0) | ((e2 == 0) & _owns_ties(x0, y0, x1, y1)))

        inv = 1.0 / area2
        zt = (e0 * inv * z[i0] + e1 * inv * z[i1] + e2 * inv * z[i2]).astype(np.float32)
        win = inside & (zt < depth[rows, cols])
        depth[rows, cols][win] = zt[win]
        tri_id[rows, cols][win] = t


def _interpolate_ref(xy: np.ndarray, tri_id: np.ndarray, tris: np.ndarray,
                     vattrs: np.ndarray, out: np.ndarray) -> None:
    """out (H, W, C) = the visible triangle's vertex attributes blended at each covered pixel centre."""
    rows, cols = np.nonzero(tri_id >= 0)
    px, py = cols + 0.5, rows + 0.5                                # (N,) pixel centres
    ids = tris[tri_id[rows, cols]]                                 # (N, 3)
    (x0, y0), (x1, y1), (x2, y2) = xy[ids[:, 0]].T, xy[ids[:, 1]].T, xy[ids[:, 2]].T
    inv = 1.0 / _edge(x0, y0, x1, y1, x2, y2)                      # either winding: the sign cancels
    w = np.stack([_edge(x1, y1, x2, y2, px, py) * inv,
                  _edge(x2, y2, x0, y0, px, py) * inv,
                  _edge(x0, y0, x1, y1, px, py) * inv], axis=1)    # (N, 3) barycentrics
    out[rows, cols] = np.einsum("nk,nkc->nc", w, vattrs[ids])     # (N, C)


# ----------------------------------------------------------------------------------------------
# Fast: the same rules as numba kernels. Plain Python here; compiled lazily by _compile().

def _scan_fast(xy, z, tris, depth, tri_id):
    """_scan_ref with scalar loops and incremental edge functions (exact on the snapped grid)."""
    H, W = depth.shape
    for t in range(tris.shape[0]):
        i0, i1, i2 = tris[t, 0], tris[t, 1], tris[t, 2]
        x0, y0, x1, y1, x2, y2 = xy[i0, 0], xy[i0, 1], xy[i1, 0], xy[i1, 1], xy[i2, 0], xy[i2, 1]
        area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if not (area2 != 0.0 and math.isfinite(area2)):
            continue
        if area2 < 0.0:
            i1, i2 = i2, i1
            x1, y1, x2, y2 = x2, y2, x1, y1
            area2 = -area2
        c0 = max(np.ceil(min(x0, x1, x2) - 0.5), 0.0)
        c1 = min(np.floor(max(x0, x1, x2) - 0.5), W - 1.0)
        r0 = max(np.ceil(min(y0, y1, y2) - 0.5), 0.0)
        r1 = min(np.floor(max(y0, y1, y2) - 0.5), H - 1.0)
        if c0 > c1 or r0 > r1:
            continue
        # top-left rule for the edges opposite vertex 0, 1, 2
        own0 = y2 - y1 < 0.0 or (y2 - y1 == 0.0 and x2 - x1 > 0.0)
        own1 = y0 - y2 < 0.0 or (y0 - y2 == 0.0 and x0 - x2 > 0.0)
        own2 = y1 - y0 < 0.0 or (y1 - y0 == 0.0 and x1 - x0 > 0.0)
        inv = 1.0 / area2
        za, zb, zc = z[i0], z[i1], z[i2]
        px0 = c0 + 0.5
        for i in range(int(r0), int(r1) + 1):
            py = i + 0.5
            e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px0 - x1)
            e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px0 - x2)
            e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px0 - x0)
            for j in range(int(c0), int(c1) + 1):
                if ((e0 > 0.0 or (e0 == 0.0 and own0))
                        and (e1 > 0.0 or (e1 == 0.0 and own1))
                        and (e2 > 0.0 or (e2 == 0.0 and own2))):
                    zt = np.float32(e0 * inv * za + e1 * inv * zb + e2 * inv * zc)
                    if zt < depth[i, j]:
                        depth[i, j] = zt
                        tri_id[i, j] = t
                e0 -= y2 - y1                     # the edge functions' step for px += 1
                e1 -= y0 - y2
                e2 -= y1 - y0


def _interpolate_fast(xy, tri_id, tris, vattrs, out):
    """_interpolate_ref as scalar loops over the covered pixels."""
    H, W = tri_id.shape
    C = vattrs.shape[1]
    for i in range(H):
        py = i + 0.5
        for j in range(W):
            t = tri_id[i, j]
            if t < 0:
                continue
            a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
            x0, y0, x1, y1, x2, y2 = xy[a, 0], xy[a, 1], xy[b, 0], xy[b, 1], xy[c, 0], xy[c, 1]
            px = j + 0.5
            inv = 1.0 / ((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0))
            w0 = ((x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)) * inv
            w1 = ((x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)) * inv
            w2 = ((x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)) * inv
            for k in range(C):
                out[i, j, k] = w0 * vattrs[a, k] + w1 * vattrs[b, k] + w2 * vattrs[c, k]


@lru_cache(maxsize=1)
def _compile() -> tuple[Callable, Callable] | None:
    """Compile both kernels and run them once on a tiny mesh; None (one warning) when numba fails."""
    try:
        from numba import njit
        scan = njit(cache=True, nogil=True)(_scan_fast)
        interpolate = njit(cache=True, nogil=True)(_interpolate_fast)
        xy = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
        tris = np.array([[0, 1, 2]], dtype=np.int64)
        tri_id = np.full((4, 4), -1, dtype=np.int32)
        scan(xy, np.zeros(3), tris, np.full((4, 4), np.inf, dtype=np.float32), tri_id)
        interpolate(xy, tri_id, tris, np.ones((3, 1), dtype=np.float32), np.zeros((4, 4, 1), dtype=np.float32))
    except Exception as e:  # ImportError, numba TypingError/LoweringError, ...: all mean "use ref"
        logger.warning("numba rasteriser unavailable, falling back to the numpy reference: %s: %s",
                       type(e).__name__, e)
        return None
    return scan, interpolate


def _fast_kernels() -> tuple[Callable, Callable] | None:
    """The compiled (scan, interpolate) kernels, or None when numba cannot build them."""
    with _compile_lock:
        return _compile()
