"""Voice activity: webrtcvad (PyPI `webrtcvad-wheels`) on 16 kHz float32 audio, streaming.

webrtcvad classifies 10/20/30 ms frames of 16-bit PCM and is stateful; `Vad` buffers samples
so callers push any chunk size and get one decision per complete frame, with a hangover that
bridges the short gaps inside words (stop closures, unvoiced onsets).
"""
from __future__ import annotations

import numpy as np
import webrtcvad

from presenter.errors import UserError

RATE = 16000
FRAME_MS = 20


class Vad:
    """Streaming voice-activity decisions, one per FRAME_MS of 16 kHz audio."""

    def __init__(self, *, mode: int = 2, hangover_frames: int = 4) -> None:
        """mode: webrtcvad aggressiveness 0 (keeps most) .. 3 (drops most non-speech);
        hangover_frames: frames still called speech after the last voiced one (4 = 80 ms)."""
        if mode not in (0, 1, 2, 3):
            raise UserError(f"VAD mode {mode} is out of range: use 0, 1, 2 or 3")
        self.mode = mode
        self.hangover_frames = hangover_frames
        self.frame_samples = RATE * FRAME_MS // 1000
        self.reset()

    def reset(self) -> None:
        self._vad = webrtcvad.Vad(self.mode)
        self._pending = np.zeros(0, np.int16)
        self._hang = 0

    def push(self, audio: np.ndarray) -> np.ndarray:
        """(n,) float32 16 kHz -> (F,) bool, one per frame completed by this chunk (after hangover)."""
        s16 = np.clip(np.round(np.asarray(audio, np.float32) * 32767.0), -32768, 32767).astype(np.int16)
        buf = np.concatenate([self._pending, s16])
        n = len(buf) // self.frame_samples
        out = np.zeros(n, bool)
        for i in range(n):
            frame = buf[i * self.frame_samples:(i + 1) * self.frame_samples]
            if self._vad.is_speech(frame.tobytes(), RATE):
                self._hang = self.hangover_frames
                out[i] = True
            elif self._hang > 0:
                self._hang -= 1
                out[i] = True
        self._pending = buf[n * self.frame_samples:]
        return out
