"""The generator's mesh guidance image: the fitted face mesh drawn into the crop.

Legend: V = 468 mesh vertices, S crop side in pixels. Crop coordinates are pixels, x right, y down,
z in pixels with larger z nearer the camera (as the fitting step emits them).

Channel layout of the (S, S, GUIDANCE_CHANNELS) float32 image, every channel in [0, 1], 0 off the face:
  0  u  canonical texture coordinate of the surface point seen at the pixel, left -> right of the image
  1  v  canonical texture coordinate, forehead (about 0.1) -> chin (about 0.95)
        (u, v) is a dense correspondence: which point of the face this pixel shows.
  2  shade  Lambert shading, light along the view axis: the z component of the posed mesh's
        per-vertex normal (area-weighted mean of its face normals, pointing out of the front of the
        face), clipped at 0 and interpolated over each triangle. It shows 3D shape that uv alone does
        not: jaw opening, lip protrusion, head turn.
  3  coverage  1 where the mesh is drawn, 0 elsewhere.

Topology note: MediaPipe's canonical triangles bridge the inner lip ring (18 triangles) and each eye
(12 triangles); the mesh's only boundary is the face oval. The guidance leaves the lip bridge out
(`mouth_interior_triangles`), so the lip opening is a hole (coverage 0): the generator sees exactly
where the mouth is open and must paint the interior (teeth, tongue) from the reference frame.
"""
from __future__ import annotations

import numpy as np

from presenter.face.canonical import N_VERTICES, canonical_mesh, mouth_interior_triangles
from presenter.face.raster import rasterise

GUIDANCE_CHANNELS = 4


def render_guidance(verts_px: np.ndarray, size: int, *, impl: str = "fast") -> np.ndarray:
    """Fitted mesh in crop pixels (V, 3), larger z = nearer -> guidance image (size, size, 4) float32.

    impl selects the rasteriser: "fast" (numba) or "ref" (numpy).
    """
    verts_px = np.asarray(verts_px, dtype=np.float64)
    if verts_px.shape != (N_VERTICES, 3):
        raise ValueError(f"verts_px must be ({N_VERTICES}, 3) crop pixels, got {verts_px.shape}")
    mesh = canonical_mesh()
    shade = np.clip(vertex_normals(verts_px, mesh.triangles)[:, 2], 0.0, 1.0)     # (V,)
    vattrs = np.concatenate([mesh.uv, shade[:, None], np.ones((N_VERTICES, 1))], axis=1)   # (V, 4)
    depth_first = verts_px * np.array([1.0, 1.0, -1.0])                            # rasterise: smaller z = nearer
    r = rasterise(depth_first, mesh.triangles[~mouth_interior_triangles()], vattrs, (size, size), impl=impl)
    out = r.attrs                                                                  # (size, size, 4)
    np.clip(out, 0.0, 1.0, out=out)                  # blends of [0, 1] values; clip float rounding
    out[..., 3] = r.coverage                         # exactly 0 or 1, not a blend of ones
    return out


def vertex_normals(verts_px: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit per-vertex normals (V, 3) of a mesh in crop pixels (x right, y down, z towards the camera).

    Area-weighted mean of the face normals. The canonical triangles wind counter-clockwise seen from
    the front in a y-up frame; crop y points down, so cross(v2 - v0, v1 - v0) points out of the front.
    """
    v0, v1, v2 = (verts_px[triangles[:, k]] for k in range(3))                   # (F, 3) each
    face_n = np.cross(v2 - v0, v1 - v0)                                            # (F, 3), length = 2 * area
    n = np.zeros_like(verts_px)
    for k in range(3):
        np.add.at(n, triangles[:, k], face_n)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.maximum(length, 1e-12)
