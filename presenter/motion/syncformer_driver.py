"""The trained Style-SyncFormer as a streaming MouthDriver.

Speech features stream in (presenter.audio.features, ONNX Runtime encoder by default); the
SyncFormer runs over the last `receptive_frames` feature frames, which reproduces its offline
output exactly, and returns mesh displacements (F, V, 3) in cm from the avatar's closed-mouth
rest. Exact zeros mean "rest": the stream shows the avatar's idle frame as it is (which may
smile with parted lips). So only frames in silence are snapped to zeros; in speech a sealed
mouth (p/b/m) is a small non-zero displacement and is rendered, lips closed.

Silence costs almost nothing: webrtcvad marks speech in 20 ms frames, and a video frame with no
speech from SILENCE_MARGIN_S before its span to the end of its look-ahead skips the speech
encoder and the SyncFormer (it is at rest; its feature slot holds the features of a silent
window, so speech that follows sees a silent past).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from presenter.audio.features import Encode, StreamingFeatures, silence_features
from presenter.audio.vad import Vad
from presenter.face.canonical import N_VERTICES
from presenter.models.lipsync import LipSyncModel, load_lipsync

if TYPE_CHECKING:
    from presenter.engines.base import Engine
    from presenter.motion.labial import LabialGate

REST_SNAP_CM = 0.05        # without VAD, frames whose displacement stays under this are at rest
SILENCE_MARGIN_S = 0.15    # speech this close before a frame still runs the model (lips close after it)
# Frame k shows the model's output for frame k + POSE_LEAD_FRAMES. Judged by phonetics on held-out
# real speech (10 pocketsphinx utterances, default avatar, driver + renderer), the shipped model's
# mouth comes one frame after the voice: offset +1 at lead 0, 0 at lead 1 (p/b/m sealed 0.74 ->
# 0.79, labial AUC 0.81 -> 0.80), -1 at lead 2. The lead costs one frame of look-ahead.
POSE_LEAD_FRAMES = 1
# One speech-encoder call per this many frames (`presenter.audio.features._window_features`): the
# encoder is the driver's largest cost; each extra frame per call adds a frame of look-ahead.
ENCODER_EVERY = 1


class SyncFormerDriver:
    """MouthDriver over a LipSyncModel; poses are displacements (F, V, 3), cm."""

    name = "Style-SyncFormer"
    label = "mouth: Style-SyncFormer"
    # A frame's pose costs 10-15 ms here (log-mel, encoder, SyncFormer; 25-40 ms on a loaded
    # machine) and may wait behind a render in the shared pool: one frame period covers both.
    compute_s = 0.04

    def __init__(self, model: LipSyncModel | None = None, *, encode: Encode | None = None,
                 reference: np.ndarray | None = None, skip_silence: bool = True,
                 lead_frames: int = POSE_LEAD_FRAMES, step: Engine | None = None,
                 encoder_every: int = ENCODER_EVERY, labial: LabialGate | None = None) -> None:
        """skip_silence: save the model's work where webrtcvad hears no speech (see the module
        docstring); False runs it on every frame, as offline evaluation does. lead_frames: frame k
        gets the model's output for frame k + lead_frames (see POSE_LEAD_FRAMES). step: the
        SyncFormer's streaming step on an engine (`open_engine("syncformer")`, ONNX Runtime: 2-5x
        faster than torch here, docs/performance.md) for this model's weights; None runs the torch module.
        encoder_every: one speech-encoder call per this many frames (see ENCODER_EVERY). labial: a
        bilabial-closure gate on the outputs (`presenter.motion.labial`: seals p/b/m, keeps other
        speech open); None leaves the SyncFormer's mouth as it is."""
        self.model = model if model is not None else load_lipsync()
        self._engine = step
        if lead_frames < 0:
            raise ValueError(f"lead_frames must be >= 0, got {lead_frames}")
        if encoder_every < 1:
            raise ValueError(f"encoder_every must be >= 1, got {encoder_every}")
        self.lead_frames, self.encoder_every = lead_frames, encoder_every
        self.lookahead_s = self.lookahead_for(self.model, lead_frames, encoder_every)
        if encode is None:
            from presenter.engines.onnxruntime import whisper_encode
            encode = whisper_encode(1)
        self._encode = encode
        self._skip_silence = skip_silence
        if labial is not None and labial.lead != lead_frames:
            raise ValueError(f"the labial gate is built for a {labial.lead}-frame pose lead; the driver leads by "
                             f"{lead_frames} (its probabilities would be for other frames)")
        self._labial = labial
        self._silence = silence_features(self.model.feat_cfg, encode)
        self.set_style(reference)
        self.reset()

    @staticmethod
    def lookahead_for(model: LipSyncModel, lead_frames: int = POSE_LEAD_FRAMES,
                      encoder_every: int = ENCODER_EVERY) -> float:
        """Audio needed beyond a frame's end before its pose comes out: the features' look-ahead,
        the lead, and the frames an encoder call waits for."""
        return model.feat_cfg.lookahead_s + (lead_frames + encoder_every - 1) * model.feat_cfg.hop_s

    def set_style(self, reference: np.ndarray | None) -> None:
        """Speak in the style of a reference clip's displacements (T, V, 3) cm; None = the default style."""
        with torch.inference_mode():
            if reference is None:
                self._style = self.model.default_style[None]
            else:
                self._style = self.model.style(torch.as_tensor(reference, dtype=torch.float32)[None])

    def reset(self) -> None:
        if self._labial is not None:
            self._labial.reset()
        self._new_utterance()
        self._window = np.zeros((0, self.model.sync.cfg.feat_dim), np.float32)

    def _new_utterance(self) -> None:
        self._features = StreamingFeatures(self.model.feat_cfg, encode=self._encode, skip=self._silent,
                                           silence=self._silence, every=self.encoder_every)
        self._vad = Vad()
        self._voiced = np.zeros(0, bool)   # webrtcvad decisions (20 ms each) from decision _voiced_base on
        self._voiced_base = 0
        self._skip_to = 0                  # feature frames before this one are skipped (see skip)
        self._drop = self.lead_frames      # the utterance's first outputs are not shown (the lead)

    def skip(self, n_frames: int) -> None:
        """Frames not yet returned, up to n_frames of them, come out at rest with no encoder call."""
        self._skip_to = self._features.next_frame + self._drop + n_frames

    def _silent(self, frames: np.ndarray) -> np.ndarray:
        """Video frame indices (k,) -> (k,) bool: no speech heard from SILENCE_MARGIN_S before each
        frame's span to the end of its look-ahead (decisions not yet made count as silence)."""
        cfg = self.model.feat_cfg
        per_frame = cfg.hop_samples // self._vad.frame_samples
        before = round(SILENCE_MARGIN_S * 1000) // 20
        after = (cfg.hop_samples + cfg.lookahead_samples) // self._vad.frame_samples
        c = np.concatenate([[0], np.cumsum(self._voiced)])
        start = np.clip(frames * per_frame - before - self._voiced_base, 0, len(self._voiced))
        end = np.clip(frames * per_frame + after - self._voiced_base, 0, len(self._voiced))
        quiet = c[end] == c[start] if self._skip_silence else np.zeros(len(frames), bool)
        return quiet | (frames < self._skip_to)

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, np.float32).reshape(-1)
        first = self._features.next_frame
        if self._skip_silence:
            # Decisions older than the margin before the next frame are never read again.
            per_frame = self.model.feat_cfg.hop_samples // self._vad.frame_samples
            drop = max(0, first * per_frame - round(SILENCE_MARGIN_S * 1000) // 20 - self._voiced_base)
            self._voiced = np.concatenate([self._voiced[drop:], self._vad.push(audio)])
            self._voiced_base += drop
        return self._step(self._features.push(audio), first)

    def flush(self) -> np.ndarray:
        first = self._features.next_frame
        out = self._step(self._features.flush(), first)
        # The last frames' leads lie past the utterance: they rest, and every frame is returned.
        out = np.concatenate([out, np.zeros((self.lead_frames - self._drop, N_VERTICES, 3), np.float32)])
        self._new_utterance()          # keep the window: the next utterance continues the same speaker
        return out

    def _step(self, feats: np.ndarray, first: int) -> np.ndarray:
        """Model outputs for feature frames first.. (k of them), less those the lead hides."""
        out = self._outputs(feats, first)
        drop = min(self._drop, len(out))
        self._drop -= drop
        return out[drop:]

    def _outputs(self, feats: np.ndarray, first: int) -> np.ndarray:
        k = len(feats)
        if k == 0:
            return np.zeros((0, N_VERTICES, 3), np.float32)
        keep = self.model.sync.cfg.receptive_frames - 1
        self._window = np.concatenate([self._window, feats])[-(keep + k):]
        silent = self._silent(np.arange(first, first + k))
        if silent.all():      # the gate still reads these frames: its memory of the last ones spans the pause
            disp = np.zeros((k, N_VERTICES, 3), np.float32)
            return disp if self._labial is None else self._labial(self._window, disp)
        if self._engine is not None:
            out = self._engine.run({"features": self._window[None], "style": self._style.numpy()})
            disp = out["displacement"][0, -k:].copy()                                 # (k, V, 3)
        else:
            with torch.inference_mode():
                x = torch.from_numpy(self._window)[None]
                coeffs = self.model.sync.coefficients(x, self._style)[0, -k:]          # (k, K)
                disp = (coeffs @ self.model.sync.basis).view(k, N_VERTICES, 3).numpy().copy()
        disp[silent] = 0.0
        if not self._skip_silence:     # no VAD: a frame the model puts at rest counts as silence
            disp[np.abs(disp).max(axis=(1, 2)) < REST_SNAP_CM] = 0.0
        return disp if self._labial is None else self._labial(self._window, disp)
