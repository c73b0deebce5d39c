"""The shipped speech-to-mouth model: Style-SyncFormer + style encoder + the feature config they
were trained with, saved as model.safetensors + config.json (+ MODEL_CARD.md) in one folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from presenter.audio.features import FeatureConfig
from presenter.errors import UserError
from presenter.models.style_encoder import StyleEncoder, StyleEncoderConfig
from presenter.models.syncformer import SyncFormer, SyncFormerConfig

_SECTIONS = {"syncformer": SyncFormerConfig, "style_encoder": StyleEncoderConfig, "features": FeatureConfig}


class LipSyncModel(nn.Module):
    """feats (B, T, F) + reference displacements (B, Tr, V, 3) -> displacements (B, T, V, 3), cm."""

    def __init__(self, sync_cfg: SyncFormerConfig, style_cfg: StyleEncoderConfig, feat_cfg: FeatureConfig) -> None:
        super().__init__()
        self.sync, self.style = SyncFormer(sync_cfg), StyleEncoder(style_cfg)
        self.feat_cfg = feat_cfg
        # The style used when no reference clip is given: the mean code of the training clips.
        self.register_buffer("default_style", torch.zeros(style_cfg.style_dim))

    def forward(self, feats: Tensor, ref_disp: Tensor) -> Tensor:
        return self.sync(feats, self.style(ref_disp))

    def save(self, out_dir: Path, card: str) -> None:
        """Write the model folder; each file to a temporary name, then renamed."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out_dir / ".model.safetensors.tmp"))
        os.replace(out_dir / ".model.safetensors.tmp", out_dir / "model.safetensors")
        config = {"syncformer": asdict(self.sync.cfg), "style_encoder": asdict(self.style.cfg),
                  "features": asdict(self.feat_cfg)}
        for name, text in (("config.json", json.dumps(config, indent=2) + "\n"), ("MODEL_CARD.md", card)):
            (out_dir / f".{name}.tmp").write_text(text)
            os.replace(out_dir / f".{name}.tmp", out_dir / name)


def default_weights_dir() -> Path:
    return Path(str(resources.files("presenter.models").joinpath("weights/syncformer")))


def load_lipsync(weights_dir: Path | None = None) -> LipSyncModel:
    """Build from config.json and load model.safetensors strictly; errors name the file and the key."""
    d = Path(weights_dir) if weights_dir else default_weights_dir()
    cfg_path, w_path = d / "config.json", d / "model.safetensors"
    if not cfg_path.is_file() or not w_path.is_file():
        raise UserError(f"no lip-sync model in {d} (need config.json and model.safetensors); "
                        f"train one with 'presenter train syncformer'")
    raw = json.loads(cfg_path.read_text())
    built = {}
    for section, cls in _SECTIONS.items():
        if section not in raw:
            raise UserError(f"{cfg_path}: missing section {section!r}")
        unknown = set(raw[section]) - {f.name for f in fields(cls)}
        if unknown:
            raise UserError(f"{cfg_path}: unknown key(s) {sorted(unknown)} in {section!r}; re-export the model")
        built[section] = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw[section].items()})
    model = LipSyncModel(built["syncformer"], built["style_encoder"], built["features"])
    model.load_state_dict(load_file(str(w_path)), strict=True)
    return model.eval().requires_grad_(False)
