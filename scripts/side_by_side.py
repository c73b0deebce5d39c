"""A side-by-side video of the live path: the same speech, the same SyncFormer poses, drawn by the
baseline warp renderer (left) and the generator (right), with the speech muxed.

    python scripts/side_by_side.py -o docs/img/side_by_side.mp4            # default avatar, 2 utterances
    python scripts/side_by_side.py --utterances 4 --size 384 -o /tmp/sbs.mp4

The poses come from the live driver (`presenter.stream.pipeline.driver_factory`, pose lead and
all), fed the held-out read speech of pocketsphinx's test data in 20 ms chunks as a microphone
would, and both renderers draw every frame (no deadlines: what each renderer draws, not what a
loaded machine sheds). Frames are watermarked and the file is tagged SYNTHETIC.
"""
from __future__ import annotations

import argparse
import fractions
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from presenter.avatar.create import default_pack
from presenter.data.align_real import real_validation_set
from presenter.motion.base import FPS, FRAME_SAMPLES
from presenter.offline.media import Audio, MovieWriter
from presenter.stream.pipeline import driver_factory, make_renderer, mouth_box
from presenter.watermark import Watermark, new_payload

log = logging.getLogger("side_by_side")
GAP_S = 0.4            # silence between utterances (the mouth rests)
LABEL_PX = 26          # caption strip above each half


def _caption(width: int, text: str) -> np.ndarray:
    strip = np.full((LABEL_PX, width, 3), 24, np.uint8)
    cv2.putText(strip, text, (8, LABEL_PX - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (235, 235, 235), 1, cv2.LINE_AA)
    return strip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True, help="MP4 to write (atomically)")
    ap.add_argument("--utterances", type=int, default=2, help="held-out utterances spoken (1-10)")
    ap.add_argument("--size", type=int, default=320, help="side of each half, pixels (a crop around the face)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    pack = default_pack()
    _, new_driver = driver_factory("auto")
    renderers = [make_renderer(name, pack)[1] for name in ("baseline", "generator")]
    clips = real_validation_set()[:max(1, min(10, args.utterances))]
    gap = np.zeros(int(GAP_S * 16000), np.float32)
    speech = np.concatenate([np.concatenate([c.audio, gap]) for c in clips])
    driver = new_driver()
    poses = np.concatenate([driver.push(speech[i:i + 320]) for i in range(0, len(speech), 320)] + [driver.flush()])
    n = len(speech) // FRAME_SAMPLES

    # A square around the mouth box, grown to show the whole face.
    x0, y0, x1, y1 = mouth_box(pack)
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2 - 0.3 * (x1 - x0), 2.6 * (x1 - x0)
    h, w = pack.frames.shape[1:3]
    side = int(min(side, h, w))
    left = int(np.clip(cx - side / 2, 0, w - side))
    top = int(np.clip(cy - side / 2, 0, h - side))
    mark = Watermark(new_payload())
    heads = [_caption(args.size, "baseline warp (no learning)"), _caption(args.size, "generator (learned)")]
    tags = {"title": "SYNTHETIC: made by presenter (side by side: baseline warp | generator)",
            "comment": f"mouth Style-SyncFormer on {len(clips)} held-out pocketsphinx utterances; "
                       f"watermark run id {mark.payload.run_id:08x}"}
    audio = Audio(speech[:n * FRAME_SAMPLES, None].astype(np.float32), 16000)
    with MovieWriter(args.output, fps=fractions.Fraction(FPS), width=2 * args.size, height=args.size + LABEL_PX,
                     audio=audio, tags=tags) as movie:
        for i in tqdm(range(n), desc="frames"):
            pose = poses[i] if i < len(poses) and np.any(poses[i]) else None
            halves = []
            for r, head in zip(renderers, heads):
                crop = r.render(i, pose)[top:top + side, left:left + side]
                halves.append(np.concatenate([head, cv2.resize(crop, (args.size, args.size),
                                                               interpolation=cv2.INTER_AREA)]))
            movie.write(mark.mark_rgb(np.concatenate(halves, axis=1)))
        movie.commit()
    log.info("wrote %s: %d frames (%.1f s)", args.output, n, n / FPS)


if __name__ == "__main__":
    main()
