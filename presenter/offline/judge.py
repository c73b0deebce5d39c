"""The phonetic lip-sync judge (DESIGN.md section 7b): how a rendered talking face is scored.

The mouth is measured as a person's would be, from pixels: MediaPipe FaceLandmarker in IMAGE
mode (each frame alone, no tracking to smooth it), inner-lip gap |lm13 - lm14| over the
inter-ocular distance |lm33 - lm263|. The phones come from forced alignment of the known
transcript (`presenter.data.align_real.align`; pocketsphinx, CMU phones, 10 ms frames).

Scores (T frames at `fps`; a phone [start_s, end_s) covers the frames its span overlaps):
- p/b/m sealed: share of P/B/M whose smallest opening within the phone (+-1 frame) is <= 0.03.
  The threshold is fixed: a relative one called the default avatar's parted-lip rest "closed".
- t/d/k/g open: share of T/D/K/G whose smallest opening (+-1 frame) stays above 0.03; a jaw
  that shuts on every quiet sound fails it.
- labial AUC: chance that a T/D/K/G minimum exceeds a P/B/M minimum (ties count half).
- offset: the shift k in -5..+5 frames that maximises mean open-vowel opening - mean P/B/M
  minimum, with each phone looked for k frames later in the video (positive = video late).
  Open vowels: AA AE AH AO AW AY EH ER EY OW.

Every score is given at the best offset and at offset 0. The issue's "Done when" judges the
scores at 0 (the user sees no shift) and the offset itself within +-1 frame.

Real people on real talking clips: sealed 0.8-1.0, t/d/k/g open 0.62-0.91, AUC 0.92-1.0,
offset -1..+1 (P/B/M minima 0.001-0.009, T/D/K/G minima median 0.085, open vowels 0.104).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

SEALED_MAX = 0.03                      # an opening at or below this is sealed lips (inter-ocular units)
MAX_SHIFT = 5                          # offsets searched: -5..+5 frames
PAD_FRAMES = 1                         # a phone's minimum is taken over its frames +-1
BILABIALS = ("p", "b", "m")
STOPS = ("t", "d", "k", "g")
OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ow")
UPPER_LIP, LOWER_LIP = 13, 14          # inner-lip midpoints (MediaPipe face mesh)
EYE_RIGHT, EYE_LEFT = 33, 263          # outer eye corners

# Real talking clips (section 7b) and the bar issue 18 sets; offsets in frames.
HUMAN_RANGE = {"pbm_sealed": (0.8, 1.0), "tdkg_open": (0.62, 0.91), "labial_auc": (0.92, 1.0),
               "offset_frames": (-1, 1)}
DONE_WHEN = {"pbm_sealed": 0.8, "tdkg_open": 0.62, "labial_auc": 0.9, "offset_frames": 1}


def opening_from_landmarks(landmarks: np.ndarray) -> float:
    """Inner-lip gap over inter-ocular distance, from landmarks (478, 2+) in pixels."""
    gap = np.linalg.norm(landmarks[UPPER_LIP, :2] - landmarks[LOWER_LIP, :2])
    eyes = np.linalg.norm(landmarks[EYE_RIGHT, :2] - landmarks[EYE_LEFT, :2])
    return float(gap / eyes)


def mouth_openings(frames_rgb: Iterable[np.ndarray]) -> np.ndarray:
    """RGB frames (H, W, 3) uint8 -> mouth opening per frame (T,) float64; NaN where no face."""
    from presenter.face.landmarker import FaceLandmarker

    out = []
    with FaceLandmarker("image", max_faces=1) as lm:
        for rgb in frames_rgb:
            faces = lm.detect(rgb)
            out.append(opening_from_landmarks(faces[0].landmarks) if faces else math.nan)
    return np.asarray(out, np.float64)


def _frames(start_s: float, end_s: float, fps: float, pad: int) -> tuple[int, int]:
    """[first, last) frame indices overlapping [start_s, end_s), widened by pad frames."""
    first = math.floor(start_s * fps + 1e-6)
    last = max(math.ceil(end_s * fps - 1e-6), first + 1)
    return first - pad, last + pad


def per_phone(openings: np.ndarray, phones: list[tuple[str, float, float]], fps: float, shift: int,
              names: tuple[str, ...], pad: int, how) -> np.ndarray:
    """how (np.nanmin / np.nanmean) of the openings over each named phone's frames, k frames
    later; phones whose frames are outside the track or faceless are left out."""
    vals = []
    for phone, start_s, end_s in phones:
        if phone.lower() not in names:
            continue
        a, b = _frames(start_s, end_s, fps, pad)
        window = openings[max(a + shift, 0):max(b + shift, 0)]
        if window.size and not np.isnan(window).all():
            vals.append(float(how(window)))
    return np.asarray(vals, np.float64)


def auc(high: np.ndarray, low: np.ndarray) -> float:
    """P(a value of `high` > a value of `low`), ties counting half (Mann-Whitney, by ranks: fine for
    many values); NaN when either is empty."""
    high, low = np.asarray(high, np.float64).ravel(), np.asarray(low, np.float64).ravel()
    if not high.size or not low.size:
        return math.nan
    _, inverse, counts = np.unique(np.concatenate([high, low]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]          # 1-based, ties get their mean rank
    return float((ranks[:high.size].sum() - high.size * (high.size + 1) / 2) / (high.size * low.size))


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else math.nan


def _scores_at(openings: np.ndarray, phones: list[tuple[str, float, float]], fps: float, shift: int) -> dict:
    pbm = per_phone(openings, phones, fps, shift, BILABIALS, PAD_FRAMES, np.nanmin)
    tdkg = per_phone(openings, phones, fps, shift, STOPS, PAD_FRAMES, np.nanmin)
    vowels = per_phone(openings, phones, fps, shift, OPEN_VOWELS, 0, np.nanmean)
    return {
        "pbm_sealed": _rate(pbm <= SEALED_MAX), "pbm_sealed_n": int((pbm <= SEALED_MAX).sum()), "pbm_n": pbm.size,
        "tdkg_open": _rate(tdkg > SEALED_MAX), "tdkg_open_n": int((tdkg > SEALED_MAX).sum()), "tdkg_n": tdkg.size,
        "labial_auc": auc(tdkg, pbm),
        "pbm_min_median": float(np.median(pbm)) if pbm.size else math.nan,
        "pbm_min_mean": float(pbm.mean()) if pbm.size else math.nan,
        "tdkg_min_median": float(np.median(tdkg)) if tdkg.size else math.nan,
        "vowel_opening_mean": float(vowels.mean()) if vowels.size else math.nan, "vowel_n": vowels.size,
    }


def _separation(s: dict) -> float:
    """What the offset maximises: mean open-vowel opening - mean P/B/M minimum."""
    return s["vowel_opening_mean"] - s["pbm_min_mean"]


def phonetic_scores(openings: np.ndarray, fps: float, phones: list[tuple[str, float, float]]) -> dict:
    """Mouth openings (T,) at fps and aligned phones [(phone, start_s, end_s)] -> the 7b scores.

    -> {"offset_frames", "offset_s", "at_offset": scores at the best offset, "at_zero": scores at 0,
        "separation": {shift: value}, "frames", "frames_without_face", "done_when", ...}; each scores
    dict holds pbm_sealed, tdkg_open, labial_auc (NaN when a class is empty), their counts, the
    median minima and the mean open-vowel opening."""
    openings = np.asarray(openings, np.float64)
    assert openings.ndim == 1, f"openings must be (T,), got {openings.shape}"
    by_shift, separation = {}, {}
    for k in range(-MAX_SHIFT, MAX_SHIFT + 1):
        by_shift[k] = _scores_at(openings, phones, fps, k)
        separation[k] = _separation(by_shift[k])
    finite = [k for k in separation if np.isfinite(separation[k])]
    # Ties (a flat track) go to the smallest shift.
    best = max(finite, key=lambda k: (separation[k], -abs(k))) if finite else 0
    at_zero = by_shift[0]
    failed = [name for name, bar in DONE_WHEN.items() if name != "offset_frames"
              and not at_zero[name] >= bar]                     # NaN fails too
    if not (finite and abs(best) <= DONE_WHEN["offset_frames"]):
        failed.append("offset_frames")
    return {
        "fps": fps, "sealed_max": SEALED_MAX, "open_vowels": [v.upper() for v in OPEN_VOWELS],
        "frames": int(openings.size), "frames_without_face": int(np.isnan(openings).sum()),
        "offset_frames": best, "offset_s": best / fps,
        "at_offset": by_shift[best], "at_zero": at_zero,
        "separation": {k: round(v, 5) for k, v in separation.items() if np.isfinite(v)},
        "human_range": HUMAN_RANGE,
        "done_when": {"bars": DONE_WHEN, "judged": "scores at offset 0 (the shift the user sees), offset within "
                      "+-1 frame", "passed": not failed, "failed": failed},
    }


def _f(v: float, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def format_table(rows: list[tuple[str, dict]]) -> str:
    """Rows (label, phonetic_scores(...)) -> a text table: each row scored at offset 0, then at
    its best offset ("at" = the shift scored, frames), with real people's ranges underneath."""
    w = max([28] + [len(label) + 1 for label, _ in rows])
    head = f"{'':{w}s} {'at':>5s} {'p/b/m sealed':>16s} {'t/d/k/g open':>16s} {'AUC':>9s} {'offset':>6s}"
    lines = [head, "-" * len(head)]
    for label, r in rows:
        for name, shift in (("at 0", 0), ("at best", r["offset_frames"])):
            s = r["at_zero"] if name == "at 0" else r["at_offset"]
            sealed = f"{_f(s['pbm_sealed'])} ({s['pbm_sealed_n']}/{s['pbm_n']})"
            opened = f"{_f(s['tdkg_open'])} ({s['tdkg_open_n']}/{s['tdkg_n']})"
            lines.append(f"{label if name == 'at 0' else '':{w}s} {shift:>+5d} {sealed:>16s} {opened:>16s} "
                         f"{_f(s['labial_auc']):>9s} {r['offset_frames']:>+6d}")
        verdict = "passes" if r["done_when"]["passed"] else "fails " + ", ".join(r["done_when"]["failed"])
        lines.append(f"{'':{w + 6}s} Done when (scores at 0, offset +-1): {verdict}")
    h = HUMAN_RANGE
    lines.append(f"{'real people':{w}s} {'':>5s} {'%.2f-%.2f' % h['pbm_sealed']:>16s} "
                 f"{'%.2f-%.2f' % h['tdkg_open']:>16s} {'%.2f-%.2f' % h['labial_auc']:>9s} "
                 f"{'%+d..%+d' % h['offset_frames']:>6s}")
    return "\n".join(lines)
