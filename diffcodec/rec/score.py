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

import numpy as np
import torch
from torch import Tensor

from diffcodec.rec.family import StepPrior, standard_normal
from diffcodec.rng import unit16
from diffcodec.uqdm import logistic_scale

MISS = 1.0e4


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
def normal_table() -> np.ndarray:
    """n = standard_normal(v) at every 16-bit uniform v = (k + 1/2) 2^-16 (`rng.unit16`), float64 (2^16,): the
    normals behind 16-bit candidates, as `family.candidates` computes them."""
    return standard_normal(torch.from_numpy(unit16(np.arange(1 << 16, dtype=np.uint16)))).numpy()


class GaussianScreen:
    """beta log w of Gaussian-family candidates drawn at 16 bits, from their draws k (uint16), on the CPU, for one
    step (beta = `sharpen`, the encoder's sharpening of the pick; 1 scores log w itself).

    A candidate is z = mu_p + s n with n = ndtri(v), v = (k + 1/2) 2^-16 (`family.candidates`, `rng.unit16`): n is
    read from `normal_table` by k. With d = mu_q - mu_p, log w = sum_i (p2 - p1) s^2 n^2 + 2 p1 s d n + (c - p1 d^2)
    (`coefficients`); the last sum is the same for every candidate of a chunk, so both forms below leave it out
    (the argmin is unchanged). `rough` sums in float32, about twice as cheap as `exact` (float64); the encoder
    screens every candidate with it and scores only the best few exactly.
    """

    def __init__(self, p: StepPrior, mu_q: Tensor, sharpen: float = 1.0) -> None:
        p1, p2, _ = coefficients("gaussian", p)
        s = p.gaussian_std()
        self.quad = (sharpen * (p2 - p1) * s.square()).numpy()  # beta log w = sum_i n (quad n + lin) + const
        self.lin = (sharpen * 2.0 * p1 * s * (mu_q - p.mu_p)).numpy()
        self.quad32, self.lin32 = self.quad.astype(np.float32), self.lin.astype(np.float32)
        self.table = normal_table()
        self.table32 = self.table.astype(np.float32)

    def rough(self, k: np.ndarray, cols: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Approximate beta log w (minus each chunk's constant), (N, chunks), of candidate rows k (N, columns) uint16:
        column e holds element cols[e], chunk j the columns from offsets[j] to the next offset."""
        n = np.take(self.table32, k)
        return np.add.reduceat(n * (n * self.quad32[cols] + self.lin32[cols]), offsets, axis=1)

    def exact(self, k: np.ndarray, cols: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """beta log w (minus each chunk's constant), (N, chunks), float64, of candidate rows k as in `rough`."""
        n = np.take(self.table, k)
        return np.add.reduceat(n * (n * self.quad[cols] + self.lin[cols]), offsets, axis=1)
