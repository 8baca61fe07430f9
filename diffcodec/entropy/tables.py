"""Rate tables: each symbol's discretized logistic, cut to a window plus an escape, in integers.

Symbol i is an integer k_i with P(k) = G(k + 1/2) - G(k - 1/2), G(v) = sigmoid((v - mean_i) / scale_i)
(DESIGN.md section 2). With integer bounds lo/hi, G(lo - 1/2) := 0 and G(hi + 1/2) := 1: the tails
fold into the end bins. A row of the table holds the 2W + 1 integers k = base_i - W .. base_i + W
(base_i = round(mean_i)) and a last ESCAPE column with the rest of the mass; an escaped symbol is
followed by its offset k - base_i in ESCAPE_BITS raw bits. Rows are integer frequencies summing to
exactly 2**PRECISION, none zero, so the information content computed here is what the coder spends.
"""

from __future__ import annotations

import torch
from torch import Tensor

PRECISION = 24
TOTAL = 1 << PRECISION
ESCAPE_BITS = 32
MAX_WINDOW = 255
# W_i = ceil(WINDOW_SCALES * scale_i): the window then covers mean_i +- 12 scales, so the escape mass
# is at most 2 * sigmoid(-12) ~ 1.2e-5 and escapes cost < 32 * 1.2e-5 ~ 4e-4 bits per symbol.
WINDOW_SCALES = 12


def symbol_windows(
    scale: Tensor, window_scales: int = WINDOW_SCALES, lo: int | None = None, hi: int | None = None
) -> Tensor:
    """Half-width of each symbol's window, W_i = clamp(ceil(window_scales * scale_i), 1, widest) (uint8).

    widest = MAX_WINDOW, or hi - lo when bounded (a window of half-width hi - lo around any base in
    [lo, hi] already holds the whole support).
    """
    widest = MAX_WINDOW if lo is None or hi is None else min(MAX_WINDOW, max(hi - lo, 1))
    return torch.ceil(window_scales * scale.double()).clamp(1, widest).to(torch.uint8)


def window_bases(mean: Tensor, lo: int | None = None, hi: int | None = None) -> Tensor:
    """Centre of each symbol's window: base_i = round(mean_i), clamped to [lo, hi] (int64, (n,))."""
    base = torch.round(mean.double())
    if lo is not None or hi is not None:
        base = base.clamp(min=lo, max=hi)
    return base.long()


def pmf_rows(
    mean: Tensor, scale: Tensor, window: int, lo: int | None = None, hi: int | None = None
) -> tuple[Tensor, Tensor]:
    """Quantised window + escape pmf of every symbol.

    Args:
        mean, scale: (n,) logistic location and scale of each symbol, in symbol units (scale > 0).
        window: half-width W of the window.
        lo, hi: optional inclusive integer bounds of the symbols.

    Returns:
        base: (n,) int64, the symbol of column W of each row.
        freqs: (n, 2W + 2) int64; column j < 2W + 1 is k = base - W + j, the last column is the
            escape. Each row sums to exactly 2**PRECISION and every entry is >= 1.
    """
    base = window_bases(mean, lo, hi)
    # bin edges v_j = base - W - 1/2 + j, j = 0 .. 2W + 2 (the last one only makes room for the escape)
    edges = (base - window)[:, None].double() - 0.5 + torch.arange(2 * window + 3, dtype=torch.float64)
    z = (edges - mean.double()[:, None]).div_(scale.double()[:, None])
    cdf = torch.sigmoid_(z)  # G(v) = sigmoid((v - mean) / scale)
    if lo is not None:
        cdf.masked_fill_(edges < lo, 0.0)  # G(lo - 1/2) := 0
    if hi is not None:
        cdf.masked_fill_(edges > hi, 1.0)  # G(hi + 1/2) := 1
    # cumulative over [window bins..., escape]: c_j = G(v_j) - G(v_0), j <= 2W + 1, and c_{2W+2} = 1
    cum = cdf.sub_(cdf[:, :1].clone())
    cum[:, -1] = 1.0
    return base, _quantise_cumulative(cum)


def _quantise_cumulative(cum: Tensor) -> Tensor:
    """Integer frequencies from cumulative masses c_0 = 0 <= ... <= c_m = 1 ((n, m + 1) -> (n, m)).

    F_j = floor(c_j * (TOTAL - m)) + j, freq_j = F_{j+1} - F_j >= 1 and F_m = TOTAL exactly.
    Overwrites `cum`.
    """
    bins = cum.shape[1] - 1
    scaled = cum.mul_(float(TOTAL - bins)).floor_()  # integers < 2**24: exact in float64
    steps = torch.diff(scaled, dim=1)
    if bool((steps < 0).any()):  # a last-ulp dip of c_j (sigmoid is not exactly monotone): cummax
        steps = torch.diff(torch.cummax(scaled, dim=1).values, dim=1)
    return steps.add_(1.0).long()


def symbol_columns(symbols: Tensor, base: Tensor, window: int) -> Tensor:
    """Column of each symbol in its row: k - base + W inside the window, 2W + 1 (escape) outside."""
    offset = symbols.long() - base
    inside = offset.abs() <= window
    return torch.where(inside, offset + window, torch.full_like(offset, 2 * window + 1))


def information_bits(symbols: Tensor, base: Tensor, freqs: Tensor) -> float:
    """Exact bits of coding `symbols` with these integer tables, escape payloads included.

    bits = sum_i -log2(freq_i[col_i] / 2**PRECISION) + ESCAPE_BITS * #escapes.
    """
    window = (freqs.shape[1] - 2) // 2
    columns = symbol_columns(symbols, base, window)
    chosen = freqs.gather(1, columns[:, None])[:, 0].double()
    escapes = int((columns == 2 * window + 1).sum())
    return float(PRECISION * chosen.numel() - torch.log2(chosen).sum()) + ESCAPE_BITS * escapes
