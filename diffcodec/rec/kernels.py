"""The Triton kernel of REC candidate scoring (see score.py for the contract). Triton is optional: `available()`
says whether it can be imported; the kernel runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""

from __future__ import annotations

import torch
from torch import Tensor

from diffcodec.rec.family import StepPrior
from diffcodec.rec.score import MISS, coefficients

try:
    import triton
    import triton.language as tl
except ImportError:
    triton = None


def available() -> bool:
    """True when Triton can be imported."""
    return triton is not None


if triton is not None:

    @triton.jit
    def _log_sigmoid(x):
        return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))

    @triton.jit
    def _score_kernel(z_ptr, mu_q_ptr, mu_p_ptr, p1_ptr, p2_ptr, c_ptr, out_ptr, n, m, half, miss,
                      UNIFORM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros((BLOCK_N,), dtype=tl.float64)
        for start in range(0, m, BLOCK_M):
            cols = start + tl.arange(0, BLOCK_M)
            col_ok = cols < m
            mask = (rows[:, None] < n) & col_ok[None, :]
            z = tl.load(z_ptr + rows[:, None] * m + cols[None, :], mask=mask, other=0.0)
            mq = tl.load(mu_q_ptr + cols, mask=col_ok, other=0.0)[None, :]
            mp = tl.load(mu_p_ptr + cols, mask=col_ok, other=0.0)[None, :]
            p1 = tl.load(p1_ptr + cols, mask=col_ok, other=1.0)[None, :]
            p2 = tl.load(p2_ptr + cols, mask=col_ok, other=1.0)[None, :]
            c = tl.load(c_ptr + cols, mask=col_ok, other=0.0)[None, :]
            if UNIFORM:  # -[logsig((v + h) p1) + logsig(-(v - h) p1) + c] inside q's support, the miss penalty outside
                v = z - mp
                inside = -(_log_sigmoid((v + half) * p1) + _log_sigmoid(-(v - half) * p1) + c)
                off = tl.abs(z - mq)
                w = tl.where(off <= half, inside, -miss * (1.0 + (off - half) * p2))
            else:  # c - (z - mu_q)^2 p1 + (z - mu_p)^2 p2
                w = c - (z - mq) * (z - mq) * p1 + (z - mp) * (z - mp) * p2
            acc += tl.sum(tl.where(mask, w, 0.0), axis=1)
        tl.store(out_ptr + rows, acc, mask=rows < n)


def score_triton(family: str, z: Tensor, p: StepPrior, mu_q: Tensor, block_n: int = 64, block_m: int = 32) -> Tensor:
    """log w per row of z (N, m) by the Triton kernel (float64; z, p and mu_q on one device)."""
    n, m = z.shape
    p1, p2, c = (t.contiguous() for t in coefficients(family, p))
    out = torch.empty(n, dtype=torch.float64, device=z.device)
    grid = ((n + block_n - 1) // block_n,)
    _score_kernel[grid](z.contiguous(), mu_q.contiguous(), p.mu_p.contiguous(), p1, p2, c, out, n, m,
                        float(p.delta) / 2, MISS, UNIFORM=family == "uniform", BLOCK_N=block_n, BLOCK_M=block_m)
    return out
