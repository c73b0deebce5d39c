"""A bilabial-closure probe on the SyncFormer's speech features, and a lip gate that uses it.

Why: the SyncFormer alone closes a third of t/d/k/g on real speech (the judge's labial AUC 0.79),
and snapping small gaps shut (`presenter.render.mesh.SEAL_SETTLE_CM`) trades that against sealing
p/b/m. A probe that only has to tell "lips shut for p/b/m now" from the rest reads the same
features far better (frame AUC p/b/m vs t/d/k/g 0.967 on held-out real speech).

`LabialProbe`: a small MLP over a few frames of Whisper-encoder features (the same (T, 768) per
40 ms frame the SyncFormer reads, `presenter.audio.features`) -> per-frame class probabilities
(silence, other speech, bilabial p/b/m). Trained on synthetic speech with exact phone timing only
(espeak-ng and Debian festival voices; `presenter.train.labial`; `presenter/models/weights/labial`).

`gate_lips`: post-processing of a driver's displacements (F, V, 3) cm: in speech frames (non-zero
displacements) where P(bilabial) is low, the mesh lip gap is raised to at least `open_cm` by a jaw
drop (the `presenter.motion.mouth` jaw field), where it is high the lips are brought together
(gap -> 0, which `presenter.render.mesh.settle_sealed` then draws sealed).

Legend: T frames, D = 768 feature width, C = past + 1 + future context frames, V = 468 vertices.
Frame t of the probe reads features t - past .. t + future (edge frames repeated). With the
driver's one-frame pose lead (`POSE_LEAD_FRAMES`), future=1 needs no extra look-ahead.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

SILENCE, SPEECH, BILABIAL = 0, 1, 2


@dataclass(frozen=True)
class LabialConfig:
    feat_dim: int = 768
    past: int = 2            # context frames before t
    future: int = 1          # context frames after t
    hidden: int = 64
    n_classes: int = 3       # silence, other speech, bilabial

    @property
    def frames(self) -> int:
        return self.past + 1 + self.future


def stack_context(feats: np.ndarray, past: int, future: int) -> np.ndarray:
    """Features (T, D) -> (T, C * D): row t holds frames t - past .. t + future (edges repeated)."""
    T = len(feats)
    idx = np.clip(np.arange(T)[:, None] + np.arange(-past, future + 1)[None], 0, max(T - 1, 0))
    return feats[idx].reshape(T, -1)


class LabialProbe(nn.Module):
    """(B, C * D) stacked features -> (B, 3) logits. Input is normalised per feature with stored mean/std."""

    def __init__(self, cfg: LabialConfig = LabialConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(cfg.feat_dim))
        self.register_buffer("std", torch.ones(cfg.feat_dim))
        self.net = nn.Sequential(nn.Dropout(0.2), nn.Linear(cfg.frames * cfg.feat_dim, cfg.hidden), nn.GELU(),
                                 nn.Dropout(0.1), nn.Linear(cfg.hidden, cfg.n_classes))

    def set_norm(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C * D) float32 -> (B, 3)."""
        c = self.cfg.frames
        x = (x.view(len(x), c, -1) - self.mean) / self.std
        return self.net(x.reshape(len(x), -1))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C * D) -> (B, 3) softmax probabilities."""
        return torch.softmax(self.logits(x), dim=-1)

    def bilabial(self, feats: np.ndarray) -> np.ndarray:
        """Features of one clip (T, D) -> P(bilabial) (T,) float32 (offline: context within the clip)."""
        x = torch.from_numpy(stack_context(np.asarray(feats, np.float32), self.cfg.past, self.cfg.future))
        with torch.inference_mode():
            return self.probs(x)[:, BILABIAL].numpy()


def default_weights_dir() -> Path:
    """The shipped probe (config.json, model.safetensors, MODEL_CARD.md)."""
    return Path(str(resources.files("presenter.models").joinpath("weights/labial")))


def load_probe(path: str | Path | None = None) -> LabialProbe:
    """A trained probe from a folder with config.json and model.safetensors (default: the shipped one)."""
    from safetensors.torch import load_file

    from presenter.models.util import config_from_json

    path = Path(path) if path else default_weights_dir()
    cfg = config_from_json(LabialConfig, path / "config.json", "retrain with 'python -m presenter.train.labial'")
    model = LabialProbe(cfg)
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval()


@dataclass(frozen=True)
class GateConfig:
    open_below: float = 0.1   # P(bilabial) under this: lip gap raised to at least open_cm
    seal_above: float = 0.5   # P(bilabial) over this: lips brought together
    open_cm: float = 0.5      # mesh lip gap (cm, incl. REST_GAP_CM) an "open" frame gets at least
    open_past: int = 1        # a frame opens only if P(bilabial) stays under open_below this many frames before it
    open_future: int = 0      # ... and this many after it (offline `gate_lips` only: live it would cost look-ahead)


def jaw_field() -> np.ndarray:
    """(V, 3) displacement, cm, per cm of inner-lip gap opened by a jaw drop (`presenter.motion.mouth`)."""
    from presenter.face.canonical import LOWER_INNER_LIP, UPPER_INNER_LIP, canonical_mesh
    from presenter.motion.mouth import JAW, N_PARAMS, deform

    v = canonical_mesh().vertices.astype(np.float32)
    p = np.zeros(N_PARAMS, np.float32)
    p[JAW] = 0.2
    d = deform(v, p) - v
    per = float(d[UPPER_INNER_LIP, 1] - d[LOWER_INNER_LIP, 1])       # gap opened by the drop, cm
    return (d / per).astype(np.float32)


def gate_lips(disp: np.ndarray, p_bilabial: np.ndarray, cfg: GateConfig = GateConfig(),
              field: np.ndarray | None = None) -> np.ndarray:
    """Displacements (F, V, 3) cm from the closed rest and P(bilabial) (F,) -> gated copy (F, V, 3).

    A speech frame whose P(bilabial), and that of open_past frames before / open_future after, is under
    open_below gets its lip gap raised to open_cm (jaw drop); one over seal_above gets gap 0.

    Frames that are exactly zero (rest/silence) are left alone. Gap = REST_GAP_CM + upper - lower
    inner-lip y, as `presenter.render.mesh.settle_sealed` measures it."""
    from presenter.face.canonical import LOWER_INNER_LIP, UPPER_INNER_LIP
    from presenter.motion.mouth import REST_GAP_CM

    field = jaw_field() if field is None else field
    out = np.array(disp, np.float32, copy=True)
    speech = np.abs(out).reshape(len(out), -1).max(axis=1) > 0
    gap = REST_GAP_CM + out[:, UPPER_INNER_LIP, 1] - out[:, LOWER_INNER_LIP, 1]
    add = np.zeros(len(out), np.float32)
    p = np.asarray(p_bilabial, np.float32)
    near = p.copy()
    for s in range(1, cfg.open_past + 1):          # P of the frames before (edge repeated)
        near = np.maximum(near, np.r_[np.full(s, p[0]), p[:-s]][:len(p)])
    for s in range(1, cfg.open_future + 1):        # and after
        near = np.maximum(near, np.r_[p[s:], np.full(s, p[-1])][:len(p)])
    lo = speech & (near < cfg.open_below) & (gap < cfg.open_cm)
    add[lo] = cfg.open_cm - gap[lo]
    hi = speech & (p > cfg.seal_above) & (gap > 0)
    add[hi] = -gap[hi]
    return out + add[:, None, None] * field[None]


class LabialGate:
    """The gate for a streaming driver: call it on each chunk of model outputs.

    `SyncFormerDriver._outputs` keeps the feature window (n, D) whose last k rows are the feature
    frames of this chunk's outputs disp (k, V, 3); with a pose lead of `lead` frames, disp[j] is
    shown at video frame (its feature frame) - lead, and that frame's P(bilabial) reads feature rows
    v - past .. v + future, all in the window when future <= lead (no added look-ahead). The last
    open_past probabilities are carried across chunks. Cost: one (C * D -> hidden -> 3) MLP per
    frame, about 0.4 ms with the gate here.
    """

    def __init__(self, probe: LabialProbe, cfg: GateConfig = GateConfig(), lead: int = 1) -> None:
        if cfg.open_future:
            raise ValueError(f"open_future {cfg.open_future}: the streaming gate reads no later frame's "
                             "P(bilabial) (each would cost a frame of look-ahead); use gate_lips offline")
        if probe.cfg.future > lead:
            raise ValueError(f"probe future {probe.cfg.future} needs lead_frames >= that, got {lead}")
        self.probe, self.cfg, self.lead = probe, cfg, lead
        self.field = jaw_field()
        self.reset()

    def reset(self) -> None:
        self._past = np.zeros(0, np.float32)

    def __call__(self, window: np.ndarray, disp: np.ndarray) -> np.ndarray:
        """Feature window (n, D), this chunk's displacements (k, V, 3) -> gated (k, V, 3)."""
        k, n, c = len(disp), len(window), self.probe.cfg
        if k == 0:
            return disp
        rows = np.arange(n - k, n)[:, None] - self.lead + np.arange(-c.past, c.future + 1)[None]
        x = np.asarray(window, np.float32)[np.clip(rows, 0, n - 1)].reshape(k, -1)
        with torch.inference_mode():
            p = self.probe.probs(torch.from_numpy(np.ascontiguousarray(x)))[:, BILABIAL].numpy()
        h = len(self._past)
        full = np.concatenate([self._past, p])
        gated = gate_lips(np.concatenate([np.zeros((h,) + disp.shape[1:], np.float32), disp]), full,
                          self.cfg, self.field)[h:]
        self._past = full[-self.cfg.open_past:] if self.cfg.open_past else full[:0]
        return gated
