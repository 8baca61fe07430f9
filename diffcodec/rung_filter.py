"""Rung filters: a linear filter per image and rung, fitted by the encoder to the original and sent in the file.

The post-filter (refine.py) corrects what the U-Net gets wrong on average; what is left at rung k depends on the
image. The encoder fits, by least squares on the whole image, a small point-symmetric filter over the three
channels of the rung's shown image y (pixel units) and sends its quantised coefficients with the step's chunk
(chunk coder `filtered`, docs/format.md); the decoder shows

    y'_c = y_c + sum_{d, g} c_{c,d,g} t_{d,g} + b_c,   t_{d,g} = sum_{o in g} y_d(. + o)

g running over the pairs {o, -o} of a shape's offsets (the centre alone). Coefficients are integers n times
q = 2^-p, coded under a Laplace of the encoder's scale. The encoder sends a filter only where its PSNR gain pays for
its bits, at the codec's own rate-distortion slope, at that rung and every later one that carries them
(`fit_filter`). Display only: the decoded chain never depends on a filter, and the rung's check, made on the
unrefined x_hat, is carried on over the filter (`RungFilter.checked`).
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .entropy.shared import decode_laplace, encode_laplace, finish, new_decoder, new_encoder
from .errors import BitstreamError


def _pairs(offsets: list[tuple[int, int]]) -> list[tuple[tuple[int, int], ...]]:
    """The offsets as point-symmetric groups: the centre alone, then each {o, -o} once."""
    groups: list[tuple[tuple[int, int], ...]] = []
    for o in offsets:
        mirror = (-o[0], -o[1])
        if not any(o in g for g in groups):
            groups.append((o,) if o == mirror else (o, mirror))
    return groups


def _square(r: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(-r, r + 1) for j in range(-r, r + 1)]


def _diamond(r: int) -> list[tuple[int, int]]:
    return [o for o in _square(r) if abs(o[0]) + abs(o[1]) <= r]


SHAPES: dict[int, list[tuple[tuple[int, int], ...]]] = {1: _pairs(_square(1)), 2: _pairs(_diamond(2)),
                                                        3: _pairs(_square(2))}
"""Shape id (stored) -> tap groups of each input channel: 3 x 3 (5 groups), diamond of radius 2 (7), 5 x 5 (13)."""
_UNION = SHAPES[3]  # every shape's groups are among these
_REACH = 2  # the union's largest offset
PRECISIONS = (6, 7, 8)  # p: coefficients in steps of 2^-p
SCALES = 64  # Laplace scale index s: scale 2^(s / 4 - 4) quantisation steps
MAX_COEFFICIENT = 2**15  # |n| at most this
_HEAD = struct.Struct("<BBB")  # shape, p, s


@dataclass(frozen=True)
class RungFilter:
    """One rung's filter: a shape id, the precision p and the integer coefficients n (3, 3 G + 1), per output
    channel: G per input channel d (R, G, B; `SHAPES[shape]` order), then the offset b."""

    shape: int
    precision: int
    coefficients: np.ndarray  # int64 (3, 3 G + 1)

    def weights(self) -> np.ndarray:
        """The coefficients c = n q as float64."""
        return self.coefficients * 2.0 ** -self.precision

    def checked(self, check: int) -> int:
        """The check of a filtered rung: the rung's check (CRC-32 of its unrefined pixels) carried on over shape, p
        and the coefficients (int32 little-endian), so that a filter changed with the chunk's CRC recomputed fails
        the rung's check as a changed step does."""
        head = zlib.crc32(bytes([self.shape, self.precision]), check)
        return zlib.crc32(self.coefficients.astype("<i4").tobytes(), head)


@dataclass(frozen=True)
class FilterStats:
    """What a rung's filter choice needs of an image (pixel units): the taps' Gram matrix M = A A^T over the union
    shape's taps and the constant, A (x_c - y_c) per channel, and |x_c - y_c|^2."""

    gram: np.ndarray  # (3 U + 1, 3 U + 1) float64
    cross: np.ndarray  # (3, 3 U + 1)
    residual: np.ndarray  # (3,)


def _padded(y: Tensor) -> Tensor:
    """y (3, H, W) with its edges replicated by the union's reach (every shape's taps are windows of it)."""
    return F.pad(y[None], (_REACH,) * 4, mode="replicate")[0]


def _taps(padded: Tensor, groups: list[tuple[tuple[int, int], ...]], top: int, bottom: int) -> Tensor:
    """t_{d,g} = sum_{o in g} y_d(. + o) over rows top..bottom of y, from `_padded(y)`: (3 G, bottom - top, W)."""
    r, w = _REACH, padded.shape[2] - 2 * _REACH
    return torch.stack([sum(padded[:, r + a + top:r + a + bottom, r + b:r + b + w] for a, b in g) for g in groups],
                       1).reshape(-1, bottom - top, w)


def _rows(shape: int) -> np.ndarray:
    """The rows of the union's taps (and the constant, last) that a shape uses, in its coefficient order."""
    keep = [_UNION.index(g) for g in SHAPES[shape]]
    u = len(_UNION)
    return np.array([d * u + k for d in range(3) for k in keep] + [3 * u])


def filter_stats(y: Tensor, x: Tensor, rows_per_block: int = 64) -> FilterStats:
    """The least-squares statistics of shown image y against the original x, both (1, 3, H, W) in pixel units,
    accumulated in float64 over blocks of rows (a few MB at a time)."""
    y, x = y[0].double(), x[0].double()
    padded = _padded(y)
    h = y.shape[1]
    n = 3 * len(_UNION) + 1
    gram, cross, residual = np.zeros((n, n)), np.zeros((3, n)), np.zeros(3)
    for top in range(0, h, rows_per_block):
        bottom = min(h, top + rows_per_block)
        taps = _taps(padded, _UNION, top, bottom).flatten(1)
        a = torch.cat([taps, torch.ones(1, taps.shape[1], dtype=taps.dtype)])
        t = (x[:, top:bottom] - y[:, top:bottom]).reshape(3, -1)
        gram += (a @ a.T).numpy()
        cross += (t @ a.T).numpy()
        residual += t.square().sum(1).numpy()
    return FilterStats(gram, cross, residual)


def _quantise(m: np.ndarray, v: np.ndarray, q: float) -> np.ndarray:
    """Integer n minimising |t - (n q) A|^2 = const - 2 (n q) v + (n q) M (n q)^T, greedily: each coefficient in turn
    rounded, the later ones re-fitted with the earlier ones fixed."""
    k = len(v)
    m = m + 1e-6 * np.trace(m) / k * np.eye(k)  # a tap constant over the image (replicated edges) stays solvable
    c = np.linalg.solve(m, v)
    n = np.zeros(k, np.int64)
    for j in range(k):
        n[j] = int(np.clip(np.round(c[j] / q), -MAX_COEFFICIENT, MAX_COEFFICIENT))
        if j + 1 < k:
            rest = slice(j + 1, k)
            c[rest] = np.linalg.solve(m[rest, rest], v[rest] - m[rest, :j + 1] @ (n[:j + 1] * q))
    return n


def _squared_error(stats: FilterStats, f: RungFilter) -> float:
    """|x - y'|^2 over the image, before y' is rounded and clamped (the least-squares objective)."""
    rows = _rows(f.shape)
    m = stats.gram[np.ix_(rows, rows)]
    c = f.weights()
    return float(sum(stats.residual[ch] - 2 * c[ch] @ stats.cross[ch, rows] + c[ch] @ m @ c[ch] for ch in range(3)))


def _laplace_bits(n: np.ndarray, s: int) -> float:
    """Information content of integers n under a Laplace of scale 2^(s / 4 - 4), discretised to the integers."""
    b = 2.0 ** (s / 4 - 4)
    a = np.abs(n.astype(np.float64))
    mass = np.where(a == 0, 1 - np.exp(-0.5 / b), 0.5 * (np.exp(-(a - 0.5) / b) - np.exp(-(a + 0.5) / b)))
    return float(-np.log2(np.maximum(mass, 1e-300)).sum())


def _best_scale(n: np.ndarray) -> int:
    return min(range(SCALES), key=lambda s: _laplace_bits(n, s))


def filter_cost(size: int, rung_bits: Sequence[float], slope_db: float) -> float:
    """What `size` bytes more cost the ladder in dB: at `slope_db` dB per doubling of the rate, summed over the rungs
    that carry them (`rung_bits`: the file's bits up to this rung and up to each later lossy rung)."""
    return slope_db * sum(math.log2((r + 8 * size) / r) for r in rung_bits)


def fit_filter(stats: FilterStats, rung_bits: Sequence[float], slope_db: float) -> tuple[RungFilter, float, int] | None:
    """The filter (shape and precision) whose PSNR gain at its rung is furthest above its `filter_cost`; with that gain
    in dB and its bytes. None when no filter gains more than it costs."""
    best, best_score = None, 0.0
    for shape in SHAPES:
        rows = _rows(shape)
        m = stats.gram[np.ix_(rows, rows)]
        for p in PRECISIONS:
            n = np.stack([_quantise(m, stats.cross[ch, rows], 2.0 ** -p) for ch in range(3)])
            f = RungFilter(shape, p, n)
            error = _squared_error(stats, f)
            if error <= 0 or error >= stats.residual.sum():
                continue
            gain = 10 * math.log10(stats.residual.sum() / error)
            size = _HEAD.size + 4 * math.ceil((_laplace_bits(n, _best_scale(n)) + 32) / 32)  # whole words, flushed
            score = gain - filter_cost(size, rung_bits, slope_db)
            if score > best_score:
                best, best_score = (f, gain, size), score
    return best


def apply_filter(f: RungFilter, y: Tensor) -> Tensor:
    """y' = y + sum c t + b (module docstring) of y (1, 3, H, W) in pixel units, clamped to [0, 255]."""
    taps = _taps(_padded(y[0].double()), SHAPES[f.shape], 0, y.shape[2])
    c = torch.from_numpy(f.weights())
    out = y[0].double() + torch.einsum("ck,khw->chw", c[:, :-1], taps) + c[:, -1, None, None]
    return out.clamp(0, 255)[None].to(y.dtype)


def pack_filter(f: RungFilter) -> bytes:
    """A filter's bytes: shape, p and the Laplace scale index s (u8 each), then the coefficients range coded."""
    flat = f.coefficients.reshape(-1)
    s = _best_scale(flat)
    encoder = new_encoder()
    encode_laplace(encoder, flat, 2.0 ** (s / 4 - 4), MAX_COEFFICIENT)
    return _HEAD.pack(f.shape, f.precision, s) + finish(encoder)


def unpack_filter(data: bytes, what: str) -> RungFilter:
    """The filter `pack_filter` wrote (BitstreamError naming `what` for bytes that are not one)."""
    if len(data) < _HEAD.size:
        raise BitstreamError(f"{what}: a rung filter of {len(data)} bytes is shorter than its {_HEAD.size}-byte head")
    shape, p, s = _HEAD.unpack_from(data)
    if shape not in SHAPES or p not in PRECISIONS or s >= SCALES:
        raise BitstreamError(f"{what}: rung filter shape {shape}, precision {p}, scale {s} is not one this decoder "
                             f"knows (shapes {sorted(SHAPES)}, precisions {PRECISIONS}, scales below {SCALES})")
    count = 3 * (3 * len(SHAPES[shape]) + 1)
    flat = decode_laplace(new_decoder(data[_HEAD.size:], what), count, 2.0 ** (s / 4 - 4), MAX_COEFFICIENT, what)
    return RungFilter(shape, p, flat.reshape(3, -1))


__all__ = ["SHAPES", "FilterStats", "RungFilter", "apply_filter", "filter_cost", "filter_stats", "fit_filter",
           "pack_filter", "unpack_filter"]
