"""The plain, obviously-correct rate tables the fast paths are tested against, bit for bit.

This is the code that wrote the first files (row-major, one torch op per equation of
diffcodec/entropy/tables.py): every fast path must give the same integers, so those files decode.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffcodec.entropy.tables import ESCAPE_BITS, PRECISION, TOTAL, window_bases


def reference_rows(mean: Tensor, scale: Tensor, window: int, lo: int | None = None,
                   hi: int | None = None) -> tuple[Tensor, Tensor]:
    """(base (n,) int64, freqs (n, 2W + 2) int64) of the discretized logistic rows, window + escape."""
    base = window_bases(mean, lo, hi)
    edges = (base - window)[:, None].double() - 0.5 + torch.arange(2 * window + 3, dtype=torch.float64)
    cdf = torch.sigmoid((edges - mean.double()[:, None]) / scale.double()[:, None])  # G(v)
    if lo is not None:
        cdf = torch.where(edges < lo, 0.0, cdf)  # G(lo - 1/2) := 0
    if hi is not None:
        cdf = torch.where(edges > hi, 1.0, cdf)  # G(hi + 1/2) := 1
    cum = cdf - cdf[:, :1]  # c_j = G(v_j) - G(v_0)
    cum[:, -1] = 1.0  # the escape takes the rest
    bins = cum.shape[1] - 1
    scaled = torch.floor(cum * float(TOTAL - bins))  # F_j - j = floor(c_j (TOTAL - m))
    scaled = torch.cummax(scaled, dim=1).values  # no dip of F even where sigmoid dips by an ulp
    return base, (torch.diff(scaled, dim=1) + 1).long()  # freq_j = F_{j+1} - F_j


def reference_bits(symbols: Tensor, base: Tensor, freqs: Tensor) -> tuple[Tensor, float]:
    """(columns, bits): each symbol's column (2W + 1 = escape) and sum -log2(freq / TOTAL) + 32 per escape."""
    window = (freqs.shape[1] - 2) // 2
    offset = symbols - base
    columns = torch.where(offset.abs() <= window, offset + window, 2 * window + 1)
    chosen = freqs[torch.arange(len(symbols)), columns].double()
    escapes = int((columns == 2 * window + 1).sum())
    return columns, float((PRECISION - torch.log2(chosen)).sum()) + ESCAPE_BITS * escapes
