"""The live SyncFormer driver skips its work in silence and loses nothing in speech.

The shipped model on espeak-ng phrases separated by 1.6 s of silence, fed in 20 ms chunks as
WebRTC delivers it.
"""
from __future__ import annotations

import numpy as np
import pytest

from presenter.server.client import speech_phrases
from presenter.motion.syncformer_driver import SILENCE_MARGIN_S, SyncFormerDriver


@pytest.fixture(scope="module")
def drive(one_torch_thread):
    from presenter.engines.onnxruntime import whisper_encode
    from presenter.models.lipsync import load_lipsync

    model, encode = load_lipsync(), whisper_encode(1)

    def run(audio: np.ndarray, skip: bool) -> tuple[np.ndarray, int]:
        calls = 0

        def counted(mel: np.ndarray) -> np.ndarray:
            nonlocal calls
            calls += 1
            return encode(mel)

        d = SyncFormerDriver(model, encode=counted, skip_silence=skip)
        calls = 0                                        # the silence features cost one call at start
        out = np.concatenate([d.push(audio[i:i + 320]) for i in range(0, len(audio), 320)] + [d.flush()])
        return out, calls
    return run


def test_silence_skips_the_encoder_and_rests_while_speech_is_unchanged(drive) -> None:
    """Most of the encoder calls in the silent gaps are saved; frames well inside a gap (webrtcvad
    holds speech ~0.2 s past its end, then the margin) are exact rest; in speech the mouth
    opening matches the driver that runs on every frame."""
    audio, speech = speech_phrases(gap_s=1.6, rate=16000)
    full, calls_full = drive(audio, skip=False)
    lean, calls_lean = drive(audio, skip=True)
    assert full.shape == lean.shape
    assert calls_full == len(full)
    silent_s = sum(b - a for a, b in zip([0.0] + [e for _, e in speech], [s for s, _ in speech]))
    assert calls_lean < calls_full - 0.6 * silent_s * 25, (calls_lean, calls_full)

    t = (np.arange(len(full)) + 0.5) * 0.04
    gap = np.zeros(len(t), bool)
    for (_, end), (start, _) in zip(speech[:-1], speech[1:]):
        gap |= (t > end + SILENCE_MARGIN_S + 0.3) & (t < start - 0.2)
    assert gap.sum() >= 30
    assert np.all(lean[gap] == 0)

    speaking = np.zeros(len(t), bool)
    for a, b in speech:
        speaking |= (t > a + 0.1) & (t < b)
    open_full = np.abs(full[speaking]).max(axis=(1, 2))
    open_lean = np.abs(lean[speaking]).max(axis=(1, 2))
    assert np.corrcoef(open_full, open_lean)[0, 1] > 0.95
    assert np.abs(open_full - open_lean).mean() < 0.1 * open_full.mean()


def test_the_lip_gate_streams_across_silent_chunks_as_over_the_whole_clip(one_torch_thread) -> None:
    """With the lip gate and the silence skip, 20 ms chunks (whole chunks of silence in the gaps) give
    the same poses as one push of the clip: the gate's memory of the frames before carries across
    chunks, silent ones included (a gate that forgets it at each chunk fails here)."""
    from presenter.engines.onnxruntime import whisper_encode
    from presenter.models.lipsync import load_lipsync
    from presenter.motion.labial import LabialGate, load_probe
    from presenter.motion.syncformer_driver import POSE_LEAD_FRAMES

    model, encode, probe = load_lipsync(), whisper_encode(1), load_probe()
    audio, _ = speech_phrases(("Bob and Pam", "Art", "Mom", "Ask"), gap_s=0.8, rate=16000)

    def run(chunk: int) -> np.ndarray:
        d = SyncFormerDriver(model, encode=encode, labial=LabialGate(probe, lead=POSE_LEAD_FRAMES))
        return np.concatenate([d.push(audio[i:i + chunk]) for i in range(0, len(audio), chunk)] + [d.flush()])

    whole, streamed = run(len(audio)), run(320)
    assert whole.shape == streamed.shape and np.abs(whole).max() > 0.3
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
