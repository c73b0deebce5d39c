"""Measure what presenter adds to a Pipecat bot: latency (TTS audio in -> first frame out) and CPU.

    python examples/pipecat_bench.py --utterances 12 --json pipecat_bench.json

One PresenterVideoService on the pipeline that `load_pipeline` picks by default (or --engine /
--renderer), inside a real Pipecat pipeline with a sink at the end. espeak-ng speaks the
sentences first (22,050 Hz); each utterance then enters as TTSAudioRawFrames, in one of two modes:

  burst      the whole sentence at once, as a fast TTS delivers it
  realtime   20 ms chunks at real-time pace, as a streaming TTS does

Latency is the time from the utterance's first TTSAudioRawFrame entering the service to the first
TTSAudioRawFrame (and the image it plays with) reaching the sink. CPU is this process's user +
system time over wall time (1.0 = one core busy), while talking and while idle; the load average
is printed beside it because the machine may be shared.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import time
import wave

import numpy as np
from pipecat.frames.frames import EndFrame, Frame, OutputImageRawFrame, TTSAudioRawFrame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from presenter.agents.pipecat import PresenterVideoService
from presenter.stream.pipeline import load_pipeline

SENTENCES = [
    "Good morning, and welcome to the show.",
    "Today we talk about open models that run on a laptop.",
    "The face you see is drawn on this machine's processor.",
    "Please bring your questions to the end of the session.",
]


def espeak(text: str, voice: str = "en-us+f3") -> tuple[np.ndarray, int]:
    """espeak-ng -> (int16 mono samples, rate)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16), w.getframerate()


class Clock(FrameProcessor):
    """Sink: the loop time of the first speech frame after each `arm()`, and frame counts."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.first_out: float | None = None
        self.images = self.speech = 0

    def arm(self) -> None:
        self.first_out = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            self.images += 1
        elif isinstance(frame, TTSAudioRawFrame):
            self.speech += 1
            if self.first_out is None:
                self.first_out = asyncio.get_running_loop().time()
        await self.push_frame(frame, direction)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def bench(args: argparse.Namespace) -> dict:
    pipeline = load_pipeline(args.avatar, args.engine, args.renderer)
    speech = [espeak(s) for s in SENTENCES]
    service, sink = PresenterVideoService(pipeline=pipeline, workers=args.workers), Clock()
    worker = PipelineWorker(Pipeline([service, sink]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _on_started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    out: dict = {"engine": pipeline.engine, "renderer": pipeline.renderer_kind, "workers": args.workers}

    async def drive() -> None:
        loop = asyncio.get_running_loop()
        await started.wait()
        await asyncio.sleep(2.0)                                   # let the clock settle
        c0, t0 = cpu_s(), time.monotonic()
        await asyncio.sleep(args.idle_s)
        out["cpu_idle"] = (cpu_s() - c0) / (time.monotonic() - t0)
        for mode in ("burst", "realtime"):
            latencies, c0, t0, audio_s = [], cpu_s(), time.monotonic(), 0.0
            frames0, reused0 = service.stream.stats.frames, service.stream.stats.reused
            for i in range(args.utterances):
                pcm, rate = speech[i % len(speech)]
                step = len(pcm) if mode == "burst" else rate // 50
                sink.arm()
                t_in = loop.time()
                for k in range(0, len(pcm), step):
                    await worker.queue_frame(TTSAudioRawFrame(pcm[k:k + step].tobytes(), rate, 1))
                    if mode == "realtime":
                        await asyncio.sleep(max(0.0, t_in + (k + step) / rate - loop.time()))
                await worker.queue_frame(TTSStoppedFrame())
                while sink.first_out is None:
                    await asyncio.sleep(0.005)
                latencies.append(sink.first_out - t_in)
                audio_s += len(pcm) / rate
                await asyncio.sleep(len(pcm) / rate + args.gap_s)  # let it play out, then a pause
            stats = service.stream.stats
            lat_ms = 1000 * np.array(latencies)
            out[mode] = {
                "latency_ms_p50": round(float(np.percentile(lat_ms, 50)), 1),
                "latency_ms_p95": round(float(np.percentile(lat_ms, 95)), 1),
                "latency_ms_max": round(float(lat_ms.max()), 1),
                "cpu_cores": round((cpu_s() - c0) / (time.monotonic() - t0), 3),
                "speech_s": round(audio_s, 1),
                "wall_s": round(time.monotonic() - t0, 1),
                "frames": stats.frames - frames0,
                "reused_frames": stats.reused - reused0,
                "late_poses_total": stats.late_poses,
            }
        out["loadavg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
        out["cores"] = os.cpu_count()
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avatar", default="default", help="avatar pack: 'default' or a folder (default: default)")
    ap.add_argument("--engine", default="auto", help="mouth driver: auto|syncformer|baseline (default: auto)")
    ap.add_argument("--renderer", default="auto", help="renderer: auto|generator|baseline (default: auto)")
    ap.add_argument("--workers", type=int, default=2, help="worker threads of the service (default: 2)")
    ap.add_argument("--utterances", type=int, default=12, help="utterances per mode (default: 12)")
    ap.add_argument("--gap-s", type=float, default=0.8, help="silence between utterances, s (default: 0.8)")
    ap.add_argument("--idle-s", type=float, default=5.0, help="idle time measured first, s (default: 5)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    result = asyncio.run(bench(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
