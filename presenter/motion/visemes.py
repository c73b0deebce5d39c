"""Phones -> visemes -> mouth-shape parameter tracks, with coarticulation.

The shared phone inventory (`PHONES`) is ARPAbet in lower case plus `sil`; espeak's phonemes
(`presenter.data.tts`) and pocketsphinx's alignments (`presenter.data.align_real`) are both
mapped into it. Each phone belongs to one viseme row of `VISEME_TABLE` (rendered below), which
gives the mouth target in the parameter space of `presenter.motion.mouth` (legend P:
jaw, spread, round, close, teeth, tongue) and how strongly and how long the viseme shapes its
neighbours. A diphthong is split in two halves: `ay>` in a row's phones means "first half of
ay", `>ay` "second half".

Coarticulation is the dominance model of Cohen and Massaro (1993), measured from segment
edges rather than centres so long segments hold their target: every segment s pulls parameter
p towards its target with dominance

    D_s(t) = dom_s * exp(-(start_s - t) / lead_s)   before the segment,
             dom_s                                  inside it,
             dom_s * exp(-(t - end_s) / lag_s)      after it,

and the track is the dominance-weighted mean of the targets, sum_s D_s T_s / sum_s D_s.
Short segments therefore undershoot, neighbours blend, and silence (a strong `rest` row)
relaxes the mouth to rest within about 150 ms. Three channel rules sit on top of the table:

- rounding anticipates: rows with round >= 0.5 lead the `round` channel by `ROUND_LEAD_S`
  (~120 ms), and consonants with no rounding of their own pull on `round` only at
  `ROUND_TRANSPARENCY` of their dominance, so rounding spreads across them ("s t oo");
- bilabials seal: every frame whose time lies inside a p/b/m segment, and the frame nearest
  each bilabial's centre (so a closure shorter than a frame is still seen), gets close = 1;
- frames are sampled at their presentation time t = k / fps.

Parameter ranges: jaw, round, close, teeth, tongue in 0..1; spread in -1..1 (+ wide, - pursed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from presenter.motion.mouth import CLOSE, N_PARAMS, PARAM_HIGH, PARAM_LOW, ROUND

VISEME_TABLE = """
| viseme | phones                 | jaw  | spread | round | close | teeth | tongue | dom | lead ms | lag ms |
|--------|------------------------|------|--------|-------|-------|-------|--------|-----|---------|--------|
| rest   | sil                    | 0.00 |  0.00  | 0.00  | 0.00  | 0.00  | 0.00   | 1.5 |   40    |   40   |
| PBM    | p b m                  | 0.05 |  0.00  | 0.00  | 1.00  | 0.00  | 0.00   | 3.0 |   15    |   15   |
| FV     | f v                    | 0.10 |  0.10  | 0.00  | 0.40  | 1.00  | 0.00   | 2.0 |   30    |   30   |
| TH     | th dh                  | 0.15 |  0.10  | 0.00  | 0.00  | 0.80  | 1.00   | 1.5 |   30    |   30   |
| TDN    | t d n                  | 0.15 |  0.10  | 0.00  | 0.00  | 0.70  | 0.60   | 0.8 |   40    |   40   |
| L      | l                      | 0.25 |  0.05  | 0.00  | 0.00  | 0.60  | 0.90   | 0.8 |   40    |   40   |
| SZ     | s z                    | 0.10 |  0.25  | 0.00  | 0.00  | 1.00  | 0.10   | 1.2 |   40    |   40   |
| SH     | sh zh ch jh            | 0.15 | -0.30  | 0.55  | 0.00  | 0.90  | 0.10   | 1.2 |   50    |   40   |
| KG     | k g ng                 | 0.20 |  0.00  | 0.00  | 0.00  | 0.50  | 0.10   | 0.5 |   40    |   40   |
| R      | r                      | 0.15 | -0.20  | 0.40  | 0.00  | 0.40  | 0.20   | 0.8 |   50    |   40   |
| W      | w                      | 0.10 | -0.50  | 0.90  | 0.00  | 0.00  | 0.00   | 1.5 |   80    |   40   |
| Y      | y                      | 0.15 |  0.40  | 0.00  | 0.00  | 0.60  | 0.20   | 0.8 |   40    |   40   |
| HH     | hh                     | 0.30 |  0.00  | 0.00  | 0.00  | 0.30  | 0.00   | 0.1 |   30    |   30   |
| AA     | aa ay> aw>             | 1.00 |  0.00  | 0.00  | 0.00  | 0.50  | 0.20   | 1.0 |   60    |   50   |
| AE     | ae                     | 0.85 |  0.35  | 0.00  | 0.00  | 0.60  | 0.30   | 1.0 |   60    |   50   |
| AH     | ah                     | 0.70 |  0.00  | 0.00  | 0.00  | 0.40  | 0.10   | 1.0 |   60    |   50   |
| AO     | ao oy>                 | 0.80 | -0.20  | 0.55  | 0.00  | 0.30  | 0.10   | 1.0 |   60    |   50   |
| EH     | eh ey>                 | 0.50 |  0.35  | 0.00  | 0.00  | 0.60  | 0.20   | 1.0 |   60    |   50   |
| ER     | er                     | 0.35 | -0.20  | 0.35  | 0.00  | 0.50  | 0.20   | 1.0 |   60    |   50   |
| IH     | ih >ay                 | 0.35 |  0.45  | 0.00  | 0.00  | 0.70  | 0.20   | 1.0 |   60    |   50   |
| IY     | iy >ey >oy             | 0.20 |  0.70  | 0.00  | 0.00  | 0.80  | 0.20   | 1.0 |   60    |   50   |
| OH     | ow>                    | 0.50 | -0.30  | 0.70  | 0.00  | 0.20  | 0.00   | 1.0 |   60    |   50   |
| UH     | uh >ow >aw             | 0.35 | -0.30  | 0.60  | 0.00  | 0.30  | 0.00   | 1.0 |   60    |   50   |
| UW     | uw                     | 0.20 | -0.60  | 1.00  | 0.00  | 0.10  | 0.00   | 1.0 |   60    |   50   |
"""

ROUND_LEAD_S = 0.12         # lead of the round channel for rows with round >= ROUND_ANTICIPATING
ROUND_ANTICIPATING = 0.5
ROUND_TRANSPARENCY = 0.2    # share of its dominance an unrounded consonant keeps on `round`
BILABIAL_VISEME = "PBM"
_REST_FLOOR = 1e-6          # dominance of rest everywhere: uncovered frames fall to rest
_REACH_S = 1.0              # segments further than this from a frame are ignored (weight < 1e-3)
_CHUNK_FRAMES = 250
_CONSONANTS = ("PBM", "FV", "TH", "TDN", "L", "SZ", "KG", "Y", "HH")


@dataclass(frozen=True)
class Viseme:
    """One row of the table: target (P,), dominance, lead and lag time constants in seconds."""

    name: str
    target: np.ndarray
    dom: float
    lead_s: float
    lag_s: float


def _parse(table: str) -> tuple[dict[str, Viseme], dict[str, tuple[str, ...]]]:
    visemes: dict[str, Viseme] = {}
    halves: dict[str, list[str | None]] = {}
    for line in table.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name, phones, nums = cells[0], cells[1].split(), [float(c) for c in cells[2:]]
        assert len(nums) == N_PARAMS + 3, f"viseme table row {name!r} has {len(nums)} numbers"
        target = np.array(nums[:N_PARAMS], np.float32)
        target.setflags(write=False)
        visemes[name] = Viseme(name, target, nums[N_PARAMS], nums[N_PARAMS + 1] / 1000, nums[N_PARAMS + 2] / 1000)
        for p in phones:
            if p.endswith(">"):
                halves.setdefault(p[:-1], [None, None])[0] = name
            elif p.startswith(">"):
                halves.setdefault(p[1:], [None, None])[1] = name
            else:
                halves[p] = [name]
    phone_visemes = {p: tuple(v) for p, v in halves.items()}
    assert all(None not in v for v in phone_visemes.values()), "a diphthong lacks one half"
    return visemes, phone_visemes


VISEMES, PHONE_VISEMES = _parse(VISEME_TABLE)
PHONES: tuple[str, ...] = tuple(sorted(PHONE_VISEMES))
if __doc__:
    __doc__ += "\nThe table (`VISEME_TABLE`):\n" + VISEME_TABLE


def _segments(phones: list[tuple[str, float, float]]) -> list[tuple[Viseme, float, float]]:
    """Phones -> viseme segments; a diphthong becomes two halves."""
    out = []
    for phone, start, end in phones:
        if phone not in PHONE_VISEMES:
            raise ValueError(f"phone {phone!r} is not in the shared inventory {PHONES}")
        names = PHONE_VISEMES[phone]
        step = (end - start) / len(names)
        for k, name in enumerate(names):
            out.append((VISEMES[name], start + k * step, start + (k + 1) * step))
    return out


def phones_to_params(phones: list[tuple[str, float, float]], n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Phone timings [(phone, start_s, end_s)] -> mouth parameters (n_frames, P) float32 at `fps`."""
    t = np.arange(n_frames, dtype=np.float64) / fps                                # (F,)
    segs = _segments(phones)
    params = np.zeros((n_frames, N_PARAMS))
    if segs:
        start = np.array([s for _, s, _ in segs])                                 # (S,)
        end = np.array([e for _, _, e in segs])
        target = np.stack([v.target for v, _, _ in segs]).astype(np.float64)      # (S, P)
        dom = np.array([[v.dom] * N_PARAMS for v, _, _ in segs])                   # (S, P)
        lead = np.array([[v.lead_s] * N_PARAMS for v, _, _ in segs])
        lag = np.array([[v.lag_s] * N_PARAMS for v, _, _ in segs])
        for k, (v, _, _) in enumerate(segs):
            if v.target[ROUND] >= ROUND_ANTICIPATING:
                lead[k, ROUND] = max(lead[k, ROUND], ROUND_LEAD_S)
            elif v.name in _CONSONANTS:
                dom[k, ROUND] *= ROUND_TRANSPARENCY
        for a in range(0, n_frames, _CHUNK_FRAMES):                                # bounded memory
            tc = t[a:a + _CHUNK_FRAMES]
            near = (end > tc[0] - _REACH_S) & (start < tc[-1] + _REACH_S)
            before = np.clip(start[near][None] - tc[:, None], 0.0, None)[..., None]  # (f, s, 1)
            after = np.clip(tc[:, None] - end[near][None], 0.0, None)[..., None]
            d = dom[near][None] * np.exp(-before / lead[near][None] - after / lag[near][None])  # (f, s, P)
            params[a:a + len(tc)] = (d * target[near][None]).sum(1) / (d.sum(1) + _REST_FLOOR)
    # Bilabials seal: frames inside the closure, and the frame nearest its centre.
    for v, s, e in segs:
        if v.name == BILABIAL_VISEME:
            params[(t >= s) & (t <= e), CLOSE] = 1.0
            k = int(round((s + e) / 2 * fps))
            if 0 <= k < n_frames:
                params[k, CLOSE] = 1.0
    return np.clip(params, PARAM_LOW, PARAM_HIGH).astype(np.float32)
