"""The rate tables of `tables.rate_table` as one Triton kernel, for symbols whose model lives on CUDA.

One program takes BLOCK_R symbols and all 2W + 3 bin edges of each (padded to KP columns) and
writes, in one pass, the base, the integer rows (freq - 1), and with symbols their columns and
bits. The integer arithmetic is the same as on the CPU step for step (round half to even, exact
edges, floor, a running max); only the exp inside the sigmoid is the device's, so tables built on
CUDA can differ from CPU tables in the last bit of a cdf (files stay tied to one device kind, as
the network already makes them). `TRITON_INTERPRET=1` runs the kernel on CPU tensors, which is how
the tests check it against the reference without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from diffcodec.entropy.tables import ESCAPE_BITS, PRECISION, TOTAL, RateTable

ENTRIES_PER_PROGRAM = 4096  # BLOCK_R x KP


@triton.jit
def _running_max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _scaled_cumulative(j, mean, scale, offset, window, lo, hi, HAS_LO: tl.constexpr, HAS_HI: tl.constexpr):
    """floor(c_j (TOTAL - m)) for columns j ((BLOCK_R, KP)): c_j = G(v_j) - G(v_0), c_{2W+2} = 1."""
    v_j = offset[:, None] + j.to(tl.float64)  # v_j = base - W - 1/2 + j, exact
    g_j = tl.sigmoid((v_j - mean[:, None]) / scale[:, None])  # G(v) = sigmoid((v - mean) / scale)
    g_0 = tl.sigmoid((offset - mean) / scale)
    if HAS_LO:
        g_j = tl.where(v_j < lo, 0.0, g_j)  # G(lo - 1/2) := 0
        g_0 = tl.where(offset < lo, 0.0, g_0)
    if HAS_HI:
        g_j = tl.where(v_j > hi, 1.0, g_j)  # G(hi + 1/2) := 1
        g_0 = tl.where(offset > hi, 1.0, g_0)
    cum = tl.where(j >= 2 * window + 2, 1.0, g_j - g_0[:, None])
    return tl.floor(cum * (TOTAL - 2 * window - 2).to(tl.float64))


@triton.jit
def _rate_table_kernel(
    mean_ptr, scale_ptr, symbols_ptr, base_ptr, rows_ptr, columns_ptr, bits_ptr, n, window, lo, hi,
    HAS_LO: tl.constexpr, HAS_HI: tl.constexpr, HAS_SYMBOLS: tl.constexpr,
    BLOCK_R: tl.constexpr, KP: tl.constexpr,
):
    i = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    live = i < n
    mean = tl.load(mean_ptr + i, mask=live, other=0.0)
    scale = tl.load(scale_ptr + i, mask=live, other=1.0)
    # base = round(mean) half to even, clamped to [lo, hi]
    f = tl.floor(mean)
    half_odd = (mean - f == 0.5) & (f - 2.0 * tl.floor(f * 0.5) == 1.0)
    base = tl.where((mean - f > 0.5) | half_odd, f + 1.0, f)
    if HAS_LO:
        base = tl.maximum(base, lo.to(tl.float64))
    if HAS_HI:
        base = tl.minimum(base, hi.to(tl.float64))
    offset = base - window.to(tl.float64) - 0.5
    j = tl.arange(0, KP)[None, :]
    s_j = _scaled_cumulative(j, mean, scale, offset, window, lo, hi, HAS_LO, HAS_HI)
    s_next = _scaled_cumulative(j + 1, mean, scale, offset, window, lo, hi, HAS_LO, HAS_HI)
    # F_j - j = running max of floor(c_j (TOTAL - m)): no dip even where the sigmoid dips by an ulp
    top_j = tl.associative_scan(s_j, 1, _running_max)
    top_next = tl.maximum(tl.associative_scan(s_next, 1, _running_max), 0.0)  # c_0 = 0
    counts = top_next - top_j  # freq_j - 1
    bins = 2 * window + 2
    tl.store(base_ptr + i, base.to(tl.int64), mask=live)
    tl.store(rows_ptr + i[:, None] * bins + j, counts.to(tl.float32), mask=live[:, None] & (j < bins))
    if HAS_SYMBOLS:
        offset_k = tl.load(symbols_ptr + i, mask=live, other=0) - base.to(tl.int64)
        inside = (offset_k >= -window) & (offset_k <= window)
        column = tl.where(inside, offset_k + window, bins - 1)
        chosen = tl.sum(tl.where(j == column[:, None], counts, 0.0), axis=1) + 1.0
        bits = PRECISION - tl.log2(chosen) + tl.where(inside, 0.0, ESCAPE_BITS)  # -log2(freq / 2**24)
        tl.store(columns_ptr + i, column, mask=live)
        tl.store(bits_ptr + i, bits, mask=live)


def rate_table_triton(
    mean: Tensor, scale: Tensor, window: int, lo: int | None = None, hi: int | None = None,
    symbols: Tensor | None = None,
) -> RateTable:
    """`tables.rate_table` by the Triton kernel, on the tensors' device (CUDA, or CPU when interpreted)."""
    n, bins = mean.shape[0], 2 * window + 2
    kp = triton.next_power_of_2(bins + 1)
    block_r = max(1, ENTRIES_PER_PROGRAM // kp)
    device = mean.device
    base = torch.empty(n, dtype=torch.int64, device=device)
    rows = torch.empty(n, bins, dtype=torch.float32, device=device)
    columns = torch.empty(n, dtype=torch.int64, device=device) if symbols is not None else base
    bits = torch.empty(n, dtype=torch.float64, device=device) if symbols is not None else mean
    _rate_table_kernel[(triton.cdiv(n, block_r),)](
        mean.double().contiguous(), scale.double().contiguous(),
        symbols.contiguous() if symbols is not None else base, base, rows, columns, bits, n, window,
        0 if lo is None else lo, 0 if hi is None else hi,
        HAS_LO=lo is not None, HAS_HI=hi is not None, HAS_SYMBOLS=symbols is not None, BLOCK_R=block_r, KP=kp,
    )
    if symbols is None:
        return RateTable(base, rows)
    return RateTable(base, rows, columns, int((columns == bins - 1).sum()), float(bits.sum()))
