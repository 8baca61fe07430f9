"""The hot loop of REC: log w_j = sum_i [log q(z_ji) - log p(z_ji)] for every candidate row j of a chunk.

Three implementations of one contract, tested against each other: `score_reference` (plain Python, the
definition), `score_cpu` (vectorised torch) and `score_triton` (a Triton kernel, CUDA tensors). `score`
picks by device. For the uniform family a candidate outside q's support has weight 0; it is scored
-MISS (1 + distance outside / delta) per element instead of -inf, so a chunk whose candidates all miss
still picks the nearest one (still decodable; the sample is then biased).
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
import torch
from torch import Tensor

from diffcodec.rec.family import StepPrior, standard_normal
from diffcodec.rng import unit_doubles
from diffcodec.uqdm import logistic_scale

MISS = 1.0e4
SCREEN_BITS = 16  # the Gaussian screen reads a candidate's normal from a table by the top 16 bits of its draw
_TOP_LANE = 3 if sys.byteorder == "little" else 0  # where a uint64's top 16 bits sit among its four uint16s


def _log_sigmoid(x: float) -> float:
    return min(x, 0.0) - math.log1p(math.exp(-abs(x)))


def score_reference(family: str, z: Tensor, p: StepPrior, mu_q: Tensor) -> Tensor:
    """log w per row of z (N, m), element by element with the math module (slow: tests only)."""
    delta, sigma_q = float(p.delta), float(p.sigma_q)
    out = []
    for row in z.tolist():
        total = 0.0
        for i, zi in enumerate(row):
            mq, mp, sp = float(mu_q[i]), float(p.mu_p[i]), float(p.sigma_p[i])
            if family == "gaussian":  # log N(z; mu_q, sigma_q) - log N(z; mu_p, s), s^2 = sigma_p^2 + sigma_q^2
                s = math.sqrt(sp * sp + sigma_q * sigma_q)
                total += math.log(s / sigma_q) - (zi - mq) ** 2 / (2 * sigma_q**2) + (zi - mp) ** 2 / (2 * s * s)
            elif abs(zi - mq) <= delta / 2:  # -log[G(v + delta/2) - G(v - delta/2)], v = z - mu_p
                b = sp * math.sqrt(3.0) / math.pi
                a, c = (zi - mp + delta / 2) / b, (zi - mp - delta / 2) / b
                total -= _log_sigmoid(a) + _log_sigmoid(-c) + math.log(-math.expm1(c - a))
            else:
                total -= MISS * (1.0 + (abs(zi - mq) - delta / 2) / delta)
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def coefficients(family: str, p: StepPrior) -> tuple[Tensor, Tensor, Tensor]:
    """Per-element constants (p1, p2, c) of the vectorised forms, float64 (m,).

    gaussian: log w_i = c - (z - mu_q)^2 p1 + (z - mu_p)^2 p2, p1 = 1/(2 sigma_q^2), p2 = 1/(2 s^2), c = log(s / sigma_q).
    uniform: inside, log w_i = -[logsig((v + delta/2) p1) + logsig(-(v - delta/2) p1) + c], p1 = 1/b,
    c = log(-expm1(-delta / b)), p2 = 1/delta (for the miss penalty).
    """
    if family == "gaussian":
        s = p.gaussian_std()
        sq = p.sigma_q.expand_as(s)
        return 0.5 / sq.square(), 0.5 / s.square(), torch.log(s / sq)
    inv_b = 1.0 / logistic_scale(p.sigma_p)
    return inv_b, (1.0 / p.delta).expand_as(inv_b), torch.log(-torch.expm1(-p.delta * inv_b))


def score_cpu(family: str, z: Tensor, p: StepPrior, mu_q: Tensor) -> Tensor:
    """log w per row of z (N, m), vectorised torch (any device)."""
    p1, p2, c = coefficients(family, p)
    if family == "gaussian":  # expanded into two matrix-vector products: sum z^2 (p2 - p1) + z 2 (p1 mu_q - p2 mu_p) + const
        const = (c + p2 * p.mu_p.square() - p1 * mu_q.square()).sum()
        return z.square() @ (p2 - p1) + z @ (2.0 * (p1 * mu_q - p2 * p.mu_p)) + const
    half = p.delta / 2
    v = z - p.mu_p
    inside = -(torch.nn.functional.logsigmoid((v + half) * p1) + torch.nn.functional.logsigmoid(-(v - half) * p1) + c)
    off = (z - mu_q).abs()
    return torch.where(off <= half, inside, -MISS * (1.0 + (off - half) * p2)).sum(dim=1)


def score(family: str, z: Tensor, p: StepPrior, mu_q: Tensor) -> Tensor:
    """log w per row of z (N, m): the Triton kernel for CUDA tensors when Triton is installed, else `score_cpu`."""
    if z.is_cuda:
        from diffcodec.rec import kernels

        if kernels.available():
            return kernels.score_triton(family, z, p, mu_q)
    return score_cpu(family, z, p, mu_q)


@functools.lru_cache(maxsize=1)
def _ndtri_table() -> np.ndarray:
    """ndtri at the midpoints of the 2^SCREEN_BITS equal bins of [0, 1), float32."""
    midpoints = (torch.arange(1 << SCREEN_BITS, dtype=torch.float64) + 0.5) / (1 << SCREEN_BITS)
    return torch.special.ndtri(midpoints).float().numpy()


class GaussianScreen:
    """log w of Gaussian-family candidates from their raw 64-bit draws, on the CPU, for one step.

    A candidate is z = mu_p + s n with n = ndtri(v), v the draw's double (`family.candidates`). With
    d = mu_q - mu_p, log w = sum_i (p2 - p1) s^2 n^2 + 2 p1 s d n + (c - p1 d^2) (`coefficients`); the last sum is
    the same for every candidate of a chunk, so both forms below leave it out (the argmin is unchanged).
    `rough` reads n from a table by the draw's top bits (off by under 1e-4 except in the outermost bins,
    v < 2^-15 or v > 1 - 2^-15), float32, about five times cheaper than `exact`; the encoder screens every
    candidate with it and scores only the best few exactly.
    """

    def __init__(self, p: StepPrior, mu_q: Tensor) -> None:
        p1, p2, _ = coefficients("gaussian", p)
        s = p.gaussian_std()
        self.quad = ((p2 - p1) * s.square()).numpy()
        self.lin = (2.0 * p1 * s * (mu_q - p.mu_p)).numpy()
        self.quad32, self.lin32 = self.quad.astype(np.float32), self.lin.astype(np.float32)

    def rough(self, raw: np.ndarray, cols: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Approximate log w (minus each chunk's constant), (N, chunks), of candidate rows raw (N, columns): column
        e holds element cols[e], chunk k the columns from offsets[k] to the next offset."""
        n = np.take(_ndtri_table(), raw.view(np.uint16)[..., _TOP_LANE::4])  # the top 16 bits of each draw
        return np.add.reduceat(n * (n * self.quad32[cols] + self.lin32[cols]), offsets, axis=1)

    def exact(self, raw: np.ndarray, cols: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """log w (minus each chunk's constant), (N, chunks), float64, of candidate rows raw as in `rough`."""
        n = standard_normal(torch.from_numpy(unit_doubles(raw))).numpy()
        return np.add.reduceat(n * (n * self.quad[cols] + self.lin[cols]), offsets, axis=1)
