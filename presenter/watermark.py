"""Invisible watermark: a keyed spread-spectrum pattern in luma, found by correlation.

Every frame the presenter outputs carries a 64-bit payload: the presenter version (16 bits), a
run or job id (32 bits) and a CRC-16 over b"presenter" + those 48 bits. Only this module's key
makes the pattern, so a mark that decodes with a valid CRC says "presenter".

Embedding (`Watermark`): one 128 px tile of 4 px chips, each +1 or -1, lightly blurred and scaled
to a few luma levels; the tile repeats over the frame. A quarter of the chips are a fixed pilot
(for synchronisation), the rest spread the 64 bits, 12 chips per bit in every tile. The full-frame
pattern is made once per frame size; marking a frame is one saturating add and one subtract of
uint8 planes (0.03 ms at 512 px; docs/watermark.md has the measurements).

Detection (`detect`): band-pass the luma and weight it by its local variance, estimate the scale from the period of the tiling (the
autocorrelation peaks at one tile), resample to the tile scale, fold all tiles onto one, find the
pilot's cyclic shift by FFT correlation (a crop only shifts the tiling) and read the bits at that
shift. Video frames are folded together, so a clip's evidence adds up over frames.

Legend: H, W frame height and width in pixels; T tile side (128 px); Y luma (H, W).
"""
from __future__ import annotations

import binascii
import hashlib
import itertools
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from presenter.errors import UserError

TILE_PX = 128
CHIP_PX = 4                    # chips survive H.264 and a 50 % downscale (2 px chips then)
CHIPS = TILE_PX // CHIP_PX     # 32 chips per tile side
PILOT_CHIPS = 256              # of 1024; the rest carry the payload
N_BITS = 64                    # version 16 + id 32 + CRC 16
STRENGTH = 2.5                 # peak luma levels (of 255) before rounding: levels -3..3, PSNR ~42 dB
BLUR_SIGMA_PX = 0.7            # softens chip edges: less visible, less high frequency for codecs to drop
KEY = b"presenter watermark v1"
Z_FOUND = 6.0                  # pilot peak, in standard deviations of the correlation surface; unmarked
                               # images peak at 4-5.3 (the best of ~80k shifts and scales), marked at 7-19


def _key_rng() -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(KEY).digest()[:8], "little"))


def _blur_tile(chips: np.ndarray) -> np.ndarray:
    """(CHIPS, CHIPS) chip values -> (T, T) float tile, chips spread to pixels and blurred cyclically."""
    tile = np.kron(chips, np.ones((CHIP_PX, CHIP_PX), np.float32)).astype(np.float32)
    big = np.tile(tile, (3, 3))
    big = cv2.GaussianBlur(big, (0, 0), BLUR_SIGMA_PX)
    return big[TILE_PX:2 * TILE_PX, TILE_PX:2 * TILE_PX]


@dataclass(frozen=True)
class _Code:
    """The keyed layout: which chips are pilot, which bit each other chip carries, and signs."""
    pilot: np.ndarray          # (T, T) float32: the pilot's blurred pattern
    bits: np.ndarray           # (N_BITS, T * T) float32: each bit's blurred +-pattern (bit = 1 -> +)


def _code() -> _Code:
    rng = _key_rng()
    order = rng.permutation(CHIPS * CHIPS)
    signs = rng.choice(np.float32([-1.0, 1.0]), CHIPS * CHIPS)
    pilot = np.zeros(CHIPS * CHIPS, np.float32)
    pilot[order[:PILOT_CHIPS]] = signs[order[:PILOT_CHIPS]]
    data = order[PILOT_CHIPS:]
    bits = np.zeros((N_BITS, TILE_PX * TILE_PX), np.float32)
    for b in range(N_BITS):
        chips = np.zeros(CHIPS * CHIPS, np.float32)
        mine = data[b::N_BITS]
        chips[mine] = signs[mine]
        bits[b] = _blur_tile(chips.reshape(CHIPS, CHIPS)).ravel()
    return _Code(_blur_tile(pilot.reshape(CHIPS, CHIPS)), bits)


_CODE = _code()


@dataclass(frozen=True)
class Payload:
    """What a mark says: the presenter version that made the frame and a run or job id."""
    version: str               # "MAJOR.MINOR.PATCH", each part < 16, 64, 64
    run_id: int                # 32 bits: a live server run or an offline job

    def bits(self) -> np.ndarray:
        """(N_BITS,) uint8: version 16, id 32, then the CRC-16 over b"presenter" + those 6 bytes."""
        major, minor, patch = (int(p) for p in self.version.split(".")[:3])
        if not (major < 16 and minor < 64 and patch < 64 and 0 <= self.run_id < 2 ** 32):
            raise ValueError(f"payload {self} does not fit 4/6/6 version bits and a 32-bit id")
        body = ((major << 12) | (minor << 6) | patch).to_bytes(2, "big") + self.run_id.to_bytes(4, "big")
        crc = binascii.crc_hqx(b"presenter" + body, 0xFFFF).to_bytes(2, "big")
        return np.unpackbits(np.frombuffer(body + crc, np.uint8))

    @classmethod
    def from_bits(cls, bits: np.ndarray) -> Payload | None:
        """The payload of N_BITS decoded bits, or None when the CRC does not match."""
        raw = np.packbits(bits.astype(np.uint8)).tobytes()
        body, crc = raw[:6], raw[6:8]
        if binascii.crc_hqx(b"presenter" + body, 0xFFFF).to_bytes(2, "big") != crc:
            return None
        v = int.from_bytes(body[:2], "big")
        return cls(f"{v >> 12}.{(v >> 6) & 63}.{v & 63}", int.from_bytes(body[2:], "big"))


def new_payload(run_id: int | None = None) -> Payload:
    """This presenter's version and `run_id`, or a fresh random 32-bit id."""
    from presenter import __version__

    return Payload(__version__, secrets.randbits(32) if run_id is None else run_id)


class Watermark:
    """One payload's pattern, ready to add to frames of any size (made once per size, then cached).

    Thread-safe: the worst a race does is make the same pattern twice."""

    def __init__(self, payload: Payload) -> None:
        self.payload = payload
        signs = payload.bits().astype(np.float32) * 2 - 1                  # (N_BITS,) +-1
        tile = _CODE.pilot + (signs @ _CODE.bits).reshape(TILE_PX, TILE_PX)
        self.tile = np.round(tile * STRENGTH).astype(np.int16)            # (T, T) luma levels
        self._planes: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def _for_size(self, h: int, w: int, c: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(plus, minus) uint8 planes (H, W) or (H, W, c): the pattern's positive and negative parts."""
        planes = self._planes.get((h, w, c))
        if planes is None:
            full = np.tile(self.tile, (-(-h // TILE_PX), -(-w // TILE_PX)))[:h, :w]
            if c > 1:
                full = np.repeat(full[:, :, None], c, axis=2)
            planes = (np.clip(full, 0, None).astype(np.uint8), np.clip(-full, 0, None).astype(np.uint8))
            self._planes[(h, w, c)] = planes
        return planes

    def mark_luma(self, y: np.ndarray) -> np.ndarray:
        """Add the mark to a luma plane (H, W) uint8 in place (saturating); returns y."""
        plus, minus = self._for_size(*y.shape)
        cv2.add(y, plus, dst=y)
        cv2.subtract(y, minus, dst=y)
        return y

    def mark_yuv420(self, yuv: np.ndarray) -> np.ndarray:
        """Mark yuv420p planes (H * 3 / 2, W) uint8 in place: the luma rows only; returns yuv."""
        self.mark_luma(yuv[: yuv.shape[0] * 2 // 3])
        return yuv

    def mark_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """A marked copy of RGB (H, W, 3) uint8: the same levels added to R, G and B (a luma change).
        What offline tools call on each output frame (0.08 ms at 512 px)."""
        plus, minus = self._for_size(*rgb.shape[:2], 3)
        out = cv2.add(np.ascontiguousarray(rgb), plus)
        return cv2.subtract(out, minus, dst=out)


BAND_SIGMAS_PX = (0.5, 2.0)    # detection band-pass (difference of Gaussians): where the chips live
VAR_SIGMA_PX = 4.0             # window of the local variance that weights the band-passed luma
MIN_SCALE, MAX_SCALE = 0.4, 2.0  # tile scales searched: a 50 % downscale to a 2x upscale
N_PERIODS = 2                  # autocorrelation peaks tried per axis (the tile, or its double)
N_FLIP = 8                     # least reliable bits tried flipped (up to three at once) when the CRC fails


@dataclass(frozen=True)
class Detection:
    """What `detect` or `verify_file` found."""
    found: bool                      # pilot above Z_FOUND and a payload with a valid CRC
    payload: Payload | None
    confidence: float                # found: 1 - the chance of a false match (docs/watermark.md); else 0
    z: float                         # pilot correlation peak, standard deviations above the surface
    scale: tuple[float, float]       # (y, x) size of the frame relative to the marked one
    frames: int                      # frames read (1 for an image)
    frames_found: int                # of those, frames whose own mark decodes


def whiten(y: np.ndarray) -> np.ndarray:
    """Luma (H, W) -> float32 (H, W): band-passed, then divided by its local variance (+1 level^2).

    The weighting is the matched filter for a host whose noise changes over the frame: smooth
    skin and backgrounds, where the pattern stands out, count more than hair and edges. On
    astronaut frames it lifts the pilot from z 3.6 (plain high-pass) to 14."""
    y = y.astype(np.float32)
    band = cv2.GaussianBlur(y, (0, 0), BAND_SIGMAS_PX[0]) - cv2.GaussianBlur(y, (0, 0), BAND_SIGMAS_PX[1])
    var = cv2.GaussianBlur(band * band, (0, 0), VAR_SIGMA_PX)
    return band / (var + 1.0)


def _peaks(line: np.ndarray, lo: int, hi: int) -> list[float]:
    """Sub-pixel lags of the N_PERIODS strongest local maxima of an autocorrelation line in [lo, hi)."""
    hi = min(hi, len(line) - 1)
    if hi - lo < 3:
        return []
    seg = line[lo - 1:hi + 1]
    base = cv2.blur(seg.reshape(1, -1).astype(np.float32), (9, 1)).ravel()    # the host's slow trend
    rel = seg - base
    inner = np.arange(1, len(seg) - 1)
    is_max = (rel[inner] > rel[inner - 1]) & (rel[inner] >= rel[inner + 1])
    idx = inner[is_max][np.argsort(rel[inner[is_max]])[::-1][:N_PERIODS]]
    out = []
    for i in idx:
        a, b, c = rel[i - 1], rel[i], rel[i + 1]
        den = a - 2 * b + c
        out.append(lo - 1 + i + (0.5 * (a - c) / den if den < 0 else 0.0))
    return out


def _scales(power: np.ndarray, shape: tuple[int, int]) -> list[tuple[float, float]]:
    """(y, x) scale candidates from the summed power spectrum of high-passed frames (H, W // 2 + 1)."""
    auto = np.fft.irfft2(power, s=shape)
    lo, hi = int(TILE_PX * MIN_SCALE), int(TILE_PX * MAX_SCALE) + 1
    ys = [float(p) / TILE_PX for p in _peaks(auto[:shape[0] // 2, 0], lo, hi)]
    xs = [float(p) / TILE_PX for p in _peaks(auto[0, :shape[1] // 2], lo, hi)]
    cands = [(1.0, 1.0)] + [(sy, sx) for sy in ys for sx in xs]
    cands += [(s, s) for s in ys + xs]            # one axis too short to show its period
    out: list[tuple[float, float]] = []
    for c in cands:
        if all(abs(c[0] - o[0]) > 1e-3 or abs(c[1] - o[1]) > 1e-3 for o in out):
            out.append(c)
    return out


def fold(hp: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """High-passed luma (H, W) at `scale` -> (T, T): resampled to the marked size, all tiles summed."""
    h, w = hp.shape
    if scale != (1.0, 1.0):
        hp = cv2.resize(hp, (max(1, round(w / scale[1])), max(1, round(h / scale[0]))), interpolation=cv2.INTER_LINEAR)
    h, w = hp.shape
    ph, pw = -(-h // TILE_PX) * TILE_PX, -(-w // TILE_PX) * TILE_PX
    padded = np.zeros((ph, pw), np.float32)
    padded[:h, :w] = hp
    return padded.reshape(ph // TILE_PX, TILE_PX, pw // TILE_PX, TILE_PX).sum(axis=(0, 2))


def _read(folded: np.ndarray) -> tuple[float, Payload | None]:
    """A folded tile (T, T) -> (pilot z, payload or None)."""
    corr = np.fft.irfft2(np.fft.rfft2(folded) * np.conj(np.fft.rfft2(_CODE.pilot)), s=folded.shape)
    k = int(np.argmax(corr))
    dy, dx = divmod(k, TILE_PX)
    sd = float(corr.std())
    z = (float(corr.flat[k]) - float(corr.mean())) / sd if sd > 0 else 0.0
    aligned = np.roll(folded, (-dy, -dx), axis=(0, 1))
    soft = _CODE.bits @ aligned.ravel()
    bits = (soft > 0).astype(np.uint8)
    payload = Payload.from_bits(bits)
    if payload is None and z >= Z_FOUND:
        weak = np.argsort(np.abs(soft))[:N_FLIP]
        for n_flips in (1, 2, 3):
            for flip in itertools.combinations(weak, n_flips):
                trial = bits.copy()
                trial[list(flip)] ^= 1
                if (payload := Payload.from_bits(trial)) is not None:
                    return z, payload
    return z, payload


def _false_match(z: float, n_searches: int) -> float:
    """The chance that an unmarked image passes: one of the searched hypotheses (the tile's shifts
    times `n_searches`, scales x frames) reaches z by noise (a Gaussian tail; the unmarked images
    in docs/watermark.md agree), and one of the decoder's bit-flip trials passes the CRC-16."""
    p_sync = min(1.0, TILE_PX * TILE_PX * n_searches * 0.5 * math.erfc(z / math.sqrt(2)))
    trials = sum(math.comb(N_FLIP, k) for k in range(4))
    return p_sync * trials / 2 ** 16


def detect(lumas: list[np.ndarray] | np.ndarray) -> Detection:
    """One luma plane (H, W), or several of one video, -> the mark they carry (evidence summed)."""
    frames = [lumas] if isinstance(lumas, np.ndarray) else list(lumas)
    if not frames:
        raise ValueError("detect needs at least one frame")
    scan = Scan()
    for y in frames:
        scan.add(y)
    return scan.result()


class Scan:
    """Frames of one image or video, added one at a time; `result()` reads the mark they share.

    The first SCALE_FRAMES frames fix the scales tried (from the period of their tiling); every
    frame is then folded at each scale, and the folds are summed."""

    SCALE_FRAMES = 8

    def __init__(self) -> None:
        self._shape: tuple[int, int] | None = None
        self._power: np.ndarray | None = None
        self._pending: list[np.ndarray] = []
        self._scales: list[tuple[float, float]] | None = None
        self._folds: list[list[np.ndarray]] = []          # [scale][frame] (T, T)
        self.frames = 0

    def add(self, y: np.ndarray) -> None:
        """Add one luma plane (H, W) uint8 or float; all frames of a scan have one size."""
        if self._shape is None:
            self._shape = y.shape
        elif y.shape != self._shape:
            raise ValueError(f"frame of shape {y.shape} in a scan of {self._shape} frames")
        self.frames += 1
        hp = whiten(y)
        if self._scales is None:
            spec = np.fft.rfft2(hp)
            power = (spec.real ** 2 + spec.imag ** 2).astype(np.float32)
            self._power = power if self._power is None else self._power + power
            self._pending.append(hp)
            if len(self._pending) >= self.SCALE_FRAMES:
                self._fix_scales()
        else:
            self._fold(hp)

    def _fix_scales(self) -> None:
        assert self._shape is not None and self._power is not None
        self._scales = _scales(self._power, self._shape)
        self._folds = [[] for _ in self._scales]
        for hp in self._pending:
            self._fold(hp)
        self._pending = []

    def _fold(self, hp: np.ndarray) -> None:
        assert self._scales is not None
        for s, folds in zip(self._scales, self._folds):
            folds.append(fold(hp, s))

    def result(self) -> Detection:
        if self._scales is None:
            if not self._pending:
                raise ValueError("no frames were added")
            self._fix_scales()
        assert self._scales is not None
        best = None
        for s, folds in zip(self._scales, self._folds):
            z, payload = _read(np.sum(folds, axis=0))
            if best is None or z > best[0]:
                best = (z, payload, s, folds)
        z, payload, s, folds = best
        each = [_read(f) for f in folds] if len(folds) > 1 else [(z, payload)]
        clear = [f for f, (zf, _) in zip(folds, each) if zf >= Z_FOUND]
        if 1 < len(folds) and 0 < len(clear) < len(folds):
            # Frames the codec kept the mark in (I-frames of a panning shot: motion compensation
            # smears it in P-frames) are diluted by the rest; under noise, frames this clear are rare.
            zc, pc = _read(np.sum(clear, axis=0))
            if pc is not None and (payload is None or zc > z):
                z, payload = zc, pc
        found = payload is not None and z >= Z_FOUND
        n_found = sum(1 for zf, pf in each if pf is not None and zf >= Z_FOUND)
        confidence = 1.0 - _false_match(z, len(self._scales) * len(folds)) if found else 0.0
        return Detection(found, payload if found else None, confidence, z, s, len(folds), n_found)


def verify_file(path: Path, *, max_frames: int = 48) -> Detection:
    """An image (anything OpenCV reads) or a video (anything PyAV decodes) -> its mark.

    A video contributes up to `max_frames` frames spread over its length. Raises UserError for a
    missing or unreadable file."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is not None:
        return detect(image)
    import av

    scan = Scan()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path}: neither an image nor a video (no video stream)")
            stream = container.streams.video[0]
            step = max(1, (stream.frames or 0) // max_frames)
            for i, frame in enumerate(container.decode(stream)):
                if i % step == 0:
                    scan.add(frame.to_ndarray(format="gray"))
                    if scan.frames >= max_frames:
                        break
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: not an image or a video that can be decoded ({e})") from None
    if scan.frames == 0:
        raise UserError(f"{path}: the video has no decodable frames")
    return scan.result()
