"""The shipped face GAN: MobileStyleGAN (OpenVINO IR from PyPI `random-face`) as z -> w -> RGB face.

The package's own Python wrapper imports an OpenVINO API that no longer exists, so we never
import it: we find its folder with `importlib.util.find_spec` and compile the IR files
(`random_face/data/{MappingNetwork,SynthesisNetwork}.xml`) with `openvino.Core()`.

Legend: B batch, D = 512 latent width. z ~ N(0, I) (B, D); w = mapping(z) (B, D), one style
for every synthesis layer (this distilled network takes no per-layer w+); the synthesis
network returns RGB (1, 3, 1024, 1024) in [-1, 1].
"""
from __future__ import annotations

import importlib.util
import logging
from functools import cached_property
from pathlib import Path

import numpy as np

from presenter.errors import UserError

log = logging.getLogger(__name__)

LATENT_DIM = 512
IMAGE_PX = 1024
DEFAULT_PSI = 0.7          # truncation towards the mean w: 1 = none; lower = cleaner, less varied faces
W_AVG_SAMPLES = 4096       # z samples behind the mean w (fixed seed: the mean is the same everywhere)
W_AVG_SEED = 20210721

LINEAGE = (
    "Synthetic faces from MobileStyleGAN (Belousov 2021, arXiv 2104.04767), as shipped in the "
    "PyPI package random-face 2021.7.21.1 (Apache-2.0). Those weights were distilled from "
    "NVIDIA's StyleGAN2 trained on FFHQ; StyleGAN2 is under the NVIDIA Source Code License "
    "(non-commercial) and the FFHQ images are under CC BY-NC-SA 4.0 as a collection, with "
    "individual photos under their Flickr licences. No generated face shows a real person on "
    "purpose, but the faces descend from photos of real people. Treat these faces, and any model "
    "trained on them, as for research and non-commercial use only. To ship a commercial model, "
    "retrain on identities you hold the rights to (the corpus takes them with no code change)."
)


def model_dir() -> Path:
    """The folder of random-face's OpenVINO IR files, found without importing the package."""
    spec = importlib.util.find_spec("random_face")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the face GAN needs the PyPI package random-face 2021.7.21.1: "
                        "pip install --no-deps random-face==2021.7.21.1")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    for name in ("MappingNetwork", "SynthesisNetwork"):
        for ext in ("xml", "bin"):
            if not (d / f"{name}.{ext}").is_file():
                raise UserError(f"random-face is installed but {d / f'{name}.{ext}'} is missing; "
                                "reinstall it: pip install --no-deps --force-reinstall random-face==2021.7.21.1")
    return d


def latent_z(seed: int, index: int) -> np.ndarray:
    """The z (D,) float32 of candidate `index` in the stream of `seed`: independent of counts and workers."""
    return np.random.default_rng([int(seed), int(index)]).standard_normal(LATENT_DIM).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Synthesis output (1, 3, H, W) in [-1, 1] -> RGB (H, W, 3) uint8."""
    x = np.clip(img[0].transpose(1, 2, 0), -1.0, 1.0)
    return np.round((x + 1.0) * 127.5).astype(np.uint8)


class FaceGAN:
    """MobileStyleGAN in OpenVINO, fp32 on the CPU (bf16, OpenVINO's default on some CPUs,
    would make the same seed give different pixels on different machines).

    threads: OpenVINO inference threads; 0 = OpenVINO's choice (all cores).
    """

    def __init__(self, *, threads: int = 0) -> None:
        import openvino as ov

        d = model_dir()
        core = ov.Core()
        cfg = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads > 0:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        mapping = core.read_model(str(d / "MappingNetwork.xml"))
        mapping.reshape({"var": ov.PartialShape([-1, LATENT_DIM])})   # any batch: the mean w takes 4096
        self._mapping = core.compile_model(mapping, "CPU", cfg)
        self._synthesis = core.compile_model(core.read_model(str(d / "SynthesisNetwork.xml")), "CPU", cfg)

    def mapping(self, z: np.ndarray) -> np.ndarray:
        """z (B, D) -> w (B, D), float32."""
        z = np.asarray(z, np.float32).reshape(-1, LATENT_DIM)
        return np.asarray(self._mapping(z)[0], np.float32)

    @cached_property
    def w_avg(self) -> np.ndarray:
        """Mean w (D,) over W_AVG_SAMPLES fixed z samples: the truncation centre."""
        z = np.random.default_rng(W_AVG_SEED).standard_normal((W_AVG_SAMPLES, LATENT_DIM)).astype(np.float32)
        return self.mapping(z).mean(0)

    def truncate(self, w: np.ndarray, psi: float = DEFAULT_PSI) -> np.ndarray:
        """Pull w (..., D) towards the mean by psi (1 = unchanged)."""
        return (self.w_avg + psi * (np.asarray(w, np.float32) - self.w_avg)).astype(np.float32)

    def w_from_z(self, z: np.ndarray, psi: float = DEFAULT_PSI) -> np.ndarray:
        """z (D,) -> truncated w (D,)."""
        return self.truncate(self.mapping(z[None])[0], psi)

    def synthesize(self, w: np.ndarray) -> np.ndarray:
        """w (D,) -> RGB face (1024, 1024, 3) uint8."""
        w = np.asarray(w, np.float32).reshape(1, LATENT_DIM)
        return to_uint8(self._synthesis(w)[0])
