"""Bjontegaard deltas between two R-D curves, over the range the two curves share.

Pchip variant (monotone piecewise-cubic interpolation, as in current JVET/AOM tools) instead of the
original least-squares cubic fit: the curves here span up to two decades of rate, where one cubic fits badly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator


@dataclass(frozen=True)
class Delta:
    """A Bjontegaard delta and the shared interval [lo, hi] it was averaged over."""

    value: float
    lo: float
    hi: float


def _curve(x: list[float], y: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points sorted by x, keeping the first of equal x (pchip needs strictly increasing x)."""
    order = np.argsort(x, kind="stable")
    xs, ys = np.asarray(x, float)[order], np.asarray(y, float)[order]
    keep = np.concatenate([[True], np.diff(xs) > 0])
    return xs[keep], ys[keep]


def _mean_gap(x1: list[float], y1: list[float], x2: list[float], y2: list[float]) -> tuple[float, float, float] | None:
    """Mean of y2(x) - y1(x) over the shared x range, each curve interpolated by pchip."""
    a, b = _curve(x1, y1), _curve(x2, y2)
    if len(a[0]) < 2 or len(b[0]) < 2:
        return None
    lo, hi = max(a[0][0], b[0][0]), min(a[0][-1], b[0][-1])
    if hi <= lo:
        return None
    mean = [float(PchipInterpolator(*c).integrate(lo, hi)) / (hi - lo) for c in (a, b)]
    return mean[1] - mean[0], float(lo), float(hi)


def bd_rate(anchor_bpp: list[float], anchor_q: list[float], test_bpp: list[float], test_q: list[float]) -> Delta | None:
    """Average bit-rate change (%) of test against anchor at equal quality (negative: test saves bits),
    log-rate interpolated over the shared quality range (None when the ranges do not overlap)."""
    gap = _mean_gap(anchor_q, np.log(anchor_bpp).tolist(), test_q, np.log(test_bpp).tolist())
    if gap is None:
        return None
    d, lo, hi = gap
    return Delta(100 * math.expm1(d), lo, hi)  # BD-rate = exp(mean log-rate gap) - 1


def bd_quality(anchor_bpp: list[float], anchor_q: list[float], test_bpp: list[float], test_q: list[float]) -> Delta | None:
    """Average quality change (e.g. BD-PSNR in dB) of test against anchor at equal rate, over the shared
    log-rate range; lo and hi are returned in bpp (None when the ranges do not overlap)."""
    gap = _mean_gap(np.log(anchor_bpp).tolist(), anchor_q, np.log(test_bpp).tolist(), test_q)
    if gap is None:
        return None
    d, lo, hi = gap
    return Delta(d, math.exp(lo), math.exp(hi))
