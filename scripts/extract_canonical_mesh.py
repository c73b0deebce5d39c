"""Regenerate presenter/face/data/canonical_mesh.npz from the landmarker's geometry metadata.

The FaceLandmarker task file is a zip; its `geometry_pipeline_metadata_landmarks.binarypb`
is a serialised `GeometryPipelineMetadata` protobuf (mediapipe/tasks/cc/vision/
face_geometry/proto). We decode its few fields with a tiny wire-format reader, so no
protobuf schema or compiler is needed:

    GeometryPipelineMetadata { Mesh3d canonical_mesh = 1;
                               repeated WeightedLandmarkRef procrustes_landmark_basis = 2; }
    Mesh3d { vertex_type = 1; primitive_type = 2;
             repeated float vertex_buffer = 3 [packed];   # x y z u v per vertex, cm
             repeated uint32 index_buffer = 4 [packed]; } # triangles
    WeightedLandmarkRef { uint32 landmark_id = 1; float weight = 2; }

Usage: python scripts/extract_canonical_mesh.py [--task PATH] [-o PATH]
"""
from __future__ import annotations

import argparse
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METADATA = "geometry_pipeline_metadata_landmarks.binarypb"


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) for each field of one message."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, i = _varint(buf, i)
        elif wire == 1:
            val, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = _varint(buf, i)
            val, i = buf[i:i + n], i + n
        elif wire == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((num, wire, val))
    return out


def _packed_varints(buf: bytes) -> list[int]:
    vals, i = [], 0
    while i < len(buf):
        v, i = _varint(buf, i)
        vals.append(v)
    return vals


def parse_metadata(blob: bytes) -> dict[str, np.ndarray]:
    mesh_blob, basis = None, []
    for num, _, val in _fields(blob):
        if num == 1:
            mesh_blob = val
        elif num == 2:
            ref = dict((n, v) for n, _, v in _fields(val))
            weight = struct.unpack("<f", ref[2])[0] if 2 in ref else 0.0
            basis.append((ref.get(1, 0), weight))
    if mesh_blob is None:
        raise ValueError("geometry metadata has no canonical_mesh")
    verts, index = [], []
    for num, wire, val in _fields(mesh_blob):
        if num == 3:  # packed floats, or one float per field when unpacked
            verts.extend(struct.unpack(f"<{len(val) // 4}f", val))
        elif num == 4:
            index.extend(_packed_varints(val) if wire == 2 else [val])
    vb = np.asarray(verts, np.float32).reshape(-1, 5)
    return {
        "vertices": vb[:, :3],                                  # (468, 3) cm, canonical head frame
        "uv": vb[:, 3:],                                        # (468, 2) texture coordinates
        "triangles": np.asarray(index, np.int32).reshape(-1, 3),  # (898, 3)
        "procrustes_ids": np.asarray([b[0] for b in basis], np.int32),
        "procrustes_weights": np.asarray([b[1] for b in basis], np.float32),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", type=Path, default=ROOT / "presenter/face/data/face_landmarker.task",
                    help="FaceLandmarker .task file (default: the shipped copy)")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "presenter/face/data/canonical_mesh.npz",
                    help="output .npz (default: the shipped data file)")
    args = ap.parse_args()
    with zipfile.ZipFile(args.task) as z:
        data = parse_metadata(z.read(METADATA))
    tmp = args.output.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {len(data['vertices'])} vertices, {len(data['triangles'])} triangles, "
          f"{len(data['procrustes_ids'])} procrustes landmarks")


if __name__ == "__main__":
    main()
