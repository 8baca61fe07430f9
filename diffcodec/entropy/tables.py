"""Rate tables: each symbol's discretized logistic, cut to a window plus an escape, in integers.

Symbol i is an integer k_i with P(k) = G(k + 1/2) - G(k - 1/2), G(v) = sigmoid((v - mean_i) / scale_i)
(DESIGN.md section 2). With integer bounds lo/hi, G(lo - 1/2) := 0 and G(hi + 1/2) := 1: the tails
fold into the end bins. A row of the table holds the 2W + 1 integers k = base_i - W .. base_i + W
(base_i = round(mean_i)) and a last ESCAPE column with the rest of the mass; an escaped symbol is
followed by its offset k - base_i in ESCAPE_BITS raw bits. Rows are integer frequencies summing to
exactly 2**PRECISION, none zero, so the information content computed here is what the coder spends.

`rate_table` is the vectorised CPU path: one pass per block of symbols gives the rows, the columns
(escape decisions) and the bits of the actual symbols. Its sigmoid goes through one vectorised
kernel for every element whatever the number of torch threads, so the tables cannot depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

PRECISION = 24
TOTAL = 1 << PRECISION
ESCAPE_BITS = 32
MAX_WINDOW = 255
# W_i = ceil(WINDOW_SCALES * scale_i): the window then covers mean_i +- 12 scales, so the escape mass
# is at most 2 * sigmoid(-12) ~ 1.2e-5 and escapes cost < 32 * 1.2e-5 ~ 4e-4 bits per symbol.
WINDOW_SCALES = 12
# torch runs an elementwise op on fewer than 32768 elements (its grain) in one serial loop, and that
# loop sends only the last (n mod 2 * SIMD width) elements to its scalar tail: calls of SERIAL_BLOCK
# elements, a multiple of LANES, keep every element on the vectorised exp.
SERIAL_BLOCK = 1 << 14
LANES = 64


_EDGE_STEPS = torch.arange(2 * MAX_WINDOW + 3, dtype=torch.float64)[:, None]  # j of v_j, as a column


@dataclass(frozen=True)
class RateTable:
    """The quantised window + escape pmf of a block of r symbols of one window half-width W.

    base: (r,) int64, the symbol of column W of each row.
    rows: (r, 2W + 2) float32 integers, freq - 1 per column (column j < 2W + 1 is k = base - W + j,
        the last is the escape): freq sums to exactly 2**PRECISION per row and is >= 1. These are
        the weights constriction's Categorical takes (see coder.py).
    columns: (r,) int64 column of each actual symbol (2W + 1 = escaped), None without symbols.
    escapes: how many symbols take the escape (0 without symbols).
    bits: exact information content of the actual symbols, escape payloads included (0 without symbols).
    """

    base: Tensor
    rows: Tensor
    columns: Tensor | None = None
    escapes: int = 0
    bits: float = 0.0


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


def logistic_cdf_(z: Tensor) -> Tensor:
    """sigmoid(z) in place on a contiguous float64 tensor, each element by the same vectorised kernel.

    torch sends the elements at the end of each thread's share to a scalar exp that can differ from
    the vectorised one in the last bit; serial calls on multiples of LANES elements avoid that tail.
    """
    flat = z.view(-1)
    full = flat.numel() - flat.numel() % LANES
    for start in range(0, full, SERIAL_BLOCK):
        torch.sigmoid_(flat[start : min(start + SERIAL_BLOCK, full)])
    if full < flat.numel():
        tail = torch.zeros(LANES, dtype=z.dtype)
        tail[: flat.numel() - full] = flat[full:]
        flat[full:] = torch.sigmoid_(tail)[: flat.numel() - full]
    return z


def rate_table(
    mean: Tensor, scale: Tensor, window: int, lo: int | None = None, hi: int | None = None,
    symbols: Tensor | None = None,
) -> RateTable:
    """The rows of `mean`, `scale` ((r,) float64 in symbol units) with half-width `window`, and with
    `symbols` ((r,) int64) their columns, escapes and bits, in one pass (see RateTable).

    Works column-major ((2W + 3, r): every op runs along the r contiguous symbols) and transposes once.
    """
    base = window_bases(mean, lo, hi)
    # bin edges v_j = base - W - 1/2 + j, j = 0 .. 2W + 2 (the last one only makes room for the escape)
    edges = (base - window).double().sub_(0.5) + _EDGE_STEPS[: 2 * window + 3]
    cdf = logistic_cdf_((edges - mean).div_(scale))  # G(v) = sigmoid((v - mean) / scale)
    if lo is not None:
        cdf.masked_fill_(edges < lo, 0.0)  # G(lo - 1/2) := 0
    if hi is not None:
        cdf.masked_fill_(edges > hi, 1.0)  # G(hi + 1/2) := 1
    # cumulative over [window bins..., escape]: c_j = G(v_j) - G(v_0), j <= 2W + 1, and c_{2W+2} = 1
    cum = cdf.sub_(cdf[0].clone())
    cum[-1] = 1.0
    counts = _quantise_cumulative(cum)
    rows = counts.t().to(torch.float32, memory_format=torch.contiguous_format)
    if symbols is None:
        return RateTable(base, rows)
    columns = symbol_columns(symbols, base, window)
    escapes = int((columns == 2 * window + 1).sum())
    # bits = sum_i -log2(freq_i[col_i] / 2**PRECISION) + ESCAPE_BITS * #escapes
    chosen = counts.gather(0, columns[None, :]).add_(1.0)
    bits = float(PRECISION * chosen.numel() - torch.log2_(chosen).sum()) + ESCAPE_BITS * escapes
    return RateTable(base, rows, columns, escapes, bits)


def _quantise_cumulative(cum: Tensor) -> Tensor:
    """freq - 1 from cumulative masses c_0 = 0 <= ... <= c_m = 1 down each column ((m + 1, n) -> (m, n)).

    F_j = floor(c_j * (TOTAL - m)) + j, freq_j = F_{j+1} - F_j >= 1 and F_m = TOTAL exactly.
    Overwrites `cum`.
    """
    bins = cum.shape[0] - 1
    scaled = cum.mul_(float(TOTAL - bins)).floor_()  # integers < 2**24: exact in float64
    steps = scaled[1:] - scaled[:-1]
    if float(steps.min()) < 0:  # a last-ulp dip of c_j (sigmoid is not exactly monotone): cummax
        top = torch.cummax(scaled, dim=0).values
        steps = top[1:] - top[:-1]
    return steps


def pmf_rows(
    mean: Tensor, scale: Tensor, window: int, lo: int | None = None, hi: int | None = None
) -> tuple[Tensor, Tensor]:
    """Quantised window + escape pmf of every symbol as (base (n,) int64, freqs (n, 2W + 2) int64):
    the rows of `rate_table` as integer frequencies (each row sums to 2**PRECISION, every entry >= 1)."""
    table = rate_table(mean.double(), scale.double(), window, lo, hi)
    return table.base, table.rows.long() + 1


def symbol_columns(symbols: Tensor, base: Tensor, window: int) -> Tensor:
    """Column of each symbol in its row: k - base + W inside the window, 2W + 1 (escape) outside."""
    offset = symbols.long() - base
    inside = offset.abs() <= window
    return torch.where(inside, offset + window, torch.full_like(offset, 2 * window + 1))


def information_bits(symbols: Tensor, base: Tensor, freqs: Tensor) -> float:
    """Exact bits of coding `symbols` with integer tables `freqs` (as from `pmf_rows`), escapes included:
    bits = sum_i -log2(freq_i[col_i] / 2**PRECISION) + ESCAPE_BITS * #escapes."""
    window = (freqs.shape[1] - 2) // 2
    columns = symbol_columns(symbols, base, window)
    chosen = freqs.gather(1, columns[:, None])[:, 0].double()
    escapes = int((columns == 2 * window + 1).sum())
    return float(PRECISION * chosen.numel() - torch.log2(chosen).sum()) + ESCAPE_BITS * escapes
