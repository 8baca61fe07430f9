"""Training crops taken down the codec's chain, as encoder and decoder walk it (no network): z_1 ~ q(z_1 | x), then
each step's z_s drawn from the posterior family its coder sends (Gaussian for a Gaussian REC step, else uniform)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..schedule import alpha, sigma
from ..steps import RecCoder
from ..uqdm import posterior


def step_families(coders: list) -> list[str]:
    """The posterior family each step draws z_s from: a REC coder's, else (UQ) uniform."""
    return [c.family if isinstance(c, RecCoder) else "uniform" for c in coders]


def sample_posterior(family: str, mu_q: Tensor, delta: Tensor, generator: torch.Generator) -> Tensor:
    """z_s ~ q(z_s | z_t, x): U(mu_q -+ delta/2) ("uniform") or N(mu_q, delta^2 / 12) ("gaussian")."""
    if family == "gaussian":
        return mu_q + delta / math.sqrt(12.0) * torch.randn(mu_q.shape, generator=generator)
    return mu_q + delta * (torch.rand(mu_q.shape, generator=generator) - 0.5)


def chain_to(gammas: Tensor, families: list[str], i: int, x: Tensor, generator: torch.Generator) -> Tensor:
    """z at t_i for a batch x in [-1, 1]: z_1 ~ N(alpha_1 x, sigma_1^2), then steps 0..i-1, each from its family."""
    z = alpha(gammas[0]) * x + sigma(gammas[0]) * torch.randn(x.shape, generator=generator)
    for j in range(i):
        mu_q, delta = posterior(z, x, gammas[j], gammas[j + 1])
        z = sample_posterior(families[j], mu_q, delta, generator)
    return z


__all__ = ["chain_to", "sample_posterior", "step_families"]
