"""The motion seam: every way of turning speech into mouth poses implements `MouthDriver`.

A driver is streaming. It is fed 16 kHz float32 mono audio in chunks of any size and returns
one mouth pose (P,) (see `presenter.motion.mouth`) per 40 ms video frame, in order. Frame k
covers audio samples [k * FRAME_SAMPLES, (k + 1) * FRAME_SAMPLES); its pose comes out as soon
as the driver holds `lookahead_s` of audio beyond the frame's end, never later. The live
stream sizes its audio delay from that declared look-ahead, so it must be fixed and true.

The loudness baseline serves now; a trained SyncFormer drops in later through this protocol.
Legend: F frames, P mouth parameters.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from presenter.motion.mouth import N_PARAMS

SAMPLE_RATE = 16000
FPS = 25
FRAME_SAMPLES = SAMPLE_RATE // FPS      # 640 samples = 40 ms


class MouthDriver(Protocol):
    name: str           # shown to users and in metrics, e.g. "loudness baseline (no learning)"
    label: str          # short text drawn on every frame, e.g. "mouth: loudness baseline, no learning"
    lookahead_s: float  # audio needed beyond a frame's end before its pose is returned
    compute_s: float    # time allowed, in the live audio delay, to compute a pose once its audio is in

    def push(self, audio: np.ndarray) -> np.ndarray:
        """(n,) float32 16 kHz audio -> (F, P) float32 poses of the frames this chunk completed."""
        ...

    def flush(self) -> np.ndarray:
        """The audio so far is complete: (F, P) poses of every frame not yet returned, the last
        partial frame and the missing look-ahead filled with silence. The next push starts a new
        frame at the following frame boundary."""
        ...

    def reset(self) -> None:
        """Forget all audio and state (barge-in): the next push starts frame 0 from silence."""
        ...

    def skip(self, n_frames: int) -> None:
        """The next n_frames poses are not needed (their time has passed: the machine is
        overloaded). The driver may return them at rest without the work of computing them;
        they still come out, so frame numbering is unchanged."""
        ...


def is_rest(pose: np.ndarray, *, atol: float = 1e-3) -> bool:
    """True when pose (P,) is the neutral mouth: the avatar's own idle frame can be shown as is."""
    return bool(np.all(np.abs(pose) <= atol))


def empty_poses() -> np.ndarray:
    """(0, P) float32: a push that completed no frame."""
    return np.zeros((0, N_PARAMS), np.float32)
