"""The trained Style-SyncFormer as a streaming MouthDriver.

Speech features stream in (presenter.audio.features, ONNX Runtime encoder by default); the
SyncFormer runs over the last `receptive_frames` feature frames, which reproduces its offline
output exactly, and returns mesh displacements (F, V, 3) in cm from the avatar's closed-mouth
rest. Displacements under REST_SNAP_CM everywhere are returned as exact zeros: the model says
"rest", and the stream shows the idle frame as it is.
"""
from __future__ import annotations

import numpy as np
import torch

from presenter.audio.features import Encode, StreamingFeatures
from presenter.face.canonical import N_VERTICES
from presenter.models.lipsync import LipSyncModel, load_lipsync

REST_SNAP_CM = 0.05


class SyncFormerDriver:
    """MouthDriver over a LipSyncModel; poses are displacements (F, V, 3), cm."""

    name = "Style-SyncFormer"
    label = "mouth: Style-SyncFormer"

    def __init__(self, model: LipSyncModel | None = None, *, encode: Encode | None = None,
                 reference: np.ndarray | None = None) -> None:
        self.model = model if model is not None else load_lipsync()
        self.lookahead_s = self.model.feat_cfg.lookahead_s
        if encode is None:
            from presenter.engines.onnxruntime import whisper_encode
            encode = whisper_encode(1)
        self._encode = encode
        self.set_style(reference)
        self.reset()

    def set_style(self, reference: np.ndarray | None) -> None:
        """Speak in the style of a reference clip's displacements (T, V, 3) cm; None = the default style."""
        with torch.inference_mode():
            if reference is None:
                self._style = self.model.default_style[None]
            else:
                self._style = self.model.style(torch.as_tensor(reference, dtype=torch.float32)[None])

    def reset(self) -> None:
        self._features = StreamingFeatures(self.model.feat_cfg, encode=self._encode)
        self._window = np.zeros((0, self.model.sync.cfg.feat_dim), np.float32)

    def push(self, audio: np.ndarray) -> np.ndarray:
        return self._step(self._features.push(np.asarray(audio, np.float32).reshape(-1)))

    def flush(self) -> np.ndarray:
        out = self._step(self._features.flush())
        window = self._window
        self.reset()
        self._window = window          # keep the past: the next utterance continues the same speaker
        return out

    def _step(self, feats: np.ndarray) -> np.ndarray:
        k = len(feats)
        if k == 0:
            return np.zeros((0, N_VERTICES, 3), np.float32)
        keep = self.model.sync.cfg.receptive_frames - 1
        self._window = np.concatenate([self._window, feats])[-(keep + k):]
        with torch.inference_mode():
            x = torch.from_numpy(self._window)[None]
            coeffs = self.model.sync.coefficients(x, self._style)[0, -k:]          # (k, K)
            disp = (coeffs @ self.model.sync.basis).view(k, N_VERTICES, 3).numpy().copy()
        still = np.abs(disp).max(axis=(1, 2)) < REST_SNAP_CM
        disp[still] = 0.0
        return disp
