"""The shipped canonical mesh is intact and is exactly what the extraction script makes."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from presenter.face.canonical import N_TRIANGLES, N_VERTICES, canonical_mesh, mouth_interior_triangles

ROOT = Path(__file__).resolve().parents[1]


def test_sizes_and_uv_range() -> None:
    """468 vertices with uv in [0, 1], 898 triangles indexing valid, distinct vertices."""
    m = canonical_mesh()
    assert m.vertices.shape == (N_VERTICES, 3) and m.uv.shape == (N_VERTICES, 2)
    assert m.triangles.shape == (N_TRIANGLES, 3)
    assert m.uv.min() >= 0.0 and m.uv.max() <= 1.0
    assert m.triangles.min() == 0 and m.triangles.max() == N_VERTICES - 1
    assert all(len(set(t)) == 3 for t in m.triangles.tolist())
    assert len(np.unique(m.triangles)) == N_VERTICES, "every vertex belongs to some triangle"


def test_manifold_with_consistent_winding() -> None:
    """Each edge bounds at most two triangles and, where two, they traverse it in opposite directions."""
    tris = canonical_mesh().triangles.tolist()
    directed = Counter((a, b) for t in tris for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])))
    assert max(directed.values()) == 1, "a directed edge used twice means flipped winding"
    undirected = Counter(frozenset(e) for e in directed)
    assert max(undirected.values()) <= 2, "an edge shared by three triangles is non-manifold"
    boundary = [e for e, n in undirected.items() if n == 1]
    assert 0 < len(boundary) < 100, "the face mask is an open surface with one outer rim"


def test_front_facing_winding() -> None:
    """Triangles are counter-clockwise seen from the front (+z): almost all normals point at the viewer."""
    m = canonical_mesh()
    v = m.vertices[m.triangles]
    nz = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    assert (nz > 0).mean() > 0.95


def test_mouth_interior_is_the_lip_bridge() -> None:
    """The canonical topology bridges the lips with a small strip of triangles between inner-lip points."""
    mask = mouth_interior_triangles()
    assert 10 <= mask.sum() <= 30


def test_extraction_script_reproduces_shipped_file(tmp_path: Path) -> None:
    """scripts/extract_canonical_mesh.py regenerates the shipped data file exactly."""
    out = tmp_path / "mesh.npz"
    subprocess.run([sys.executable, str(ROOT / "scripts/extract_canonical_mesh.py"), "-o", str(out)], check=True,
                   capture_output=True)
    shipped, fresh = np.load(ROOT / "presenter/face/data/canonical_mesh.npz"), np.load(out)
    assert sorted(shipped.files) == sorted(fresh.files)
    for k in shipped.files:
        np.testing.assert_array_equal(shipped[k], fresh[k], err_msg=k)
