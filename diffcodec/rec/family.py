"""Posterior families a REC step can send: how candidates are drawn from p and what a chunk is expected to cost.

- "uniform": q = U(mu_q - delta/2, mu_q + delta/2), p = logistic(mu_p, b) * U(-delta/2, delta/2) (UQDM's step).
- "gaussian": q = N(mu_q, sigma_q^2), p = N(mu_p, sigma_p^2 + sigma_q^2): the Gaussian step with the same
  network mean and the same prior variance as the UQDM step (sigma_q = delta / sqrt(12)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffcodec.errors import BadInputError
from diffcodec.uqdm import LN2, log_interval_mass, logistic_scale

FAMILIES = ("uniform", "gaussian")
DRAWS = {"uniform": 2, "gaussian": 1}
"""Uniforms per element of a candidate: logistic + uniform for "uniform", one normal for "gaussian"."""

_QUADRATURE = 8  # points per axis of the expected-cost quadrature of the uniform family
_KL_QUADRATURE = 256  # midpoints over q's support for the uniform KL: -log P is steep near the support's edges
_V_FLOOR = 1e-12  # keeps inverse CDFs finite at v = 0


@dataclass(frozen=True)
class StepPrior:
    """What encoder and decoder both know of one step, flat float64 (n,): mu_p, sigma_p (the std of the network's
    logistic g) and delta = sqrt(12) sigma_q (a scalar tensor)."""

    mu_p: Tensor
    sigma_p: Tensor
    delta: Tensor

    @property
    def sigma_q(self) -> Tensor:
        """sigma_q = delta / sqrt(12)."""
        return self.delta / math.sqrt(12.0)

    def gaussian_std(self) -> Tensor:
        """std of the Gaussian prior: sqrt(sigma_p^2 + sigma_q^2)."""
        return torch.sqrt(self.sigma_p.square() + self.sigma_q.square())

    def take(self, rows: slice) -> "StepPrior":
        """The elements of one chunk."""
        return StepPrior(self.mu_p[rows], self.sigma_p[rows], self.delta)


def check_family(family: str) -> str:
    """The family name, or BadInputError naming the choices."""
    if family not in FAMILIES:
        raise BadInputError(f"unknown posterior family {family!r}: choose one of {', '.join(FAMILIES)}")
    return family


def expected_bits(family: str, p: StepPrior) -> Tensor:
    """Per-element cost the decoder can predict (n,): E[KL(q || p)] in bits when the prior is calibrated.

    gaussian: 1/2 log2(1 + sigma_p^2 / sigma_q^2). uniform: E[-log2 P(z_s - mu_p)] with z_s - mu_p ~ g * U, on a
    fixed 8 x 8 grid of quantiles of g and of U (P the mass of a width-delta bin, DESIGN.md section 2).
    """
    if family == "gaussian":
        return 0.5 * torch.log2(1.0 + p.sigma_p.square() / p.sigma_q.square())
    grid = (torch.arange(_QUADRATURE, dtype=torch.float64) + 0.5) / _QUADRATURE
    logit = torch.log(grid) - torch.log1p(-grid)
    b = logistic_scale(p.sigma_p)[:, None, None]
    e = b * logit[None, :, None] + p.delta * (grid - 0.5)[None, None, :]
    return -log_interval_mass(e, p.delta / 2, b).mean(dim=(1, 2)) / LN2


def kl_bits(family: str, p: StepPrior, mu_q: Tensor) -> Tensor:
    """KL(q || p) per element in bits (n,), encoder side.

    gaussian: 1/2 [log(s^2 / sigma_q^2) + (sigma_q^2 + (mu_q - mu_p)^2) / s^2 - 1] / ln 2. uniform: E_q[-log2 P(z_s - mu_p)]
    over 256 midpoints of q's support (P the mass of a width-delta bin of g, DESIGN.md section 2).
    """
    if family == "gaussian":
        s2, sq2 = p.gaussian_std().square(), p.sigma_q.square()
        return 0.5 * (torch.log(s2 / sq2) + (sq2 + (mu_q - p.mu_p).square()) / s2 - 1.0) / LN2
    grid = (torch.arange(_KL_QUADRATURE, dtype=torch.float64) + 0.5) / _KL_QUADRATURE - 0.5
    e = (mu_q - p.mu_p)[:, None] + p.delta * grid
    return -log_interval_mass(e, p.delta / 2, logistic_scale(p.sigma_p)[:, None]).mean(dim=1) / LN2


def standard_normal(v: Tensor) -> Tensor:
    """n = ndtri(v): the standard normal at quantile v, kept finite at v = 0 and 1."""
    return torch.special.ndtri(v.clamp(_V_FLOOR, 1.0 - _V_FLOOR))


def candidates(family: str, p: StepPrior, v: Tensor) -> Tensor:
    """Candidates z ~ p from shared uniforms v (..., d, m) -> (..., m) (inverse CDFs, float64)."""
    if family == "gaussian":  # z = mu_p + s ndtri(v)
        return p.mu_p + p.gaussian_std() * standard_normal(v[..., 0, :])
    v = v.clamp(_V_FLOOR, 1.0 - _V_FLOOR)
    logistic = logistic_scale(p.sigma_p) * (torch.log(v[..., 0, :]) - torch.log1p(-v[..., 0, :]))
    return p.mu_p + logistic + p.delta * (v[..., 1, :] - 0.5)  # z = mu_p + G^-1(v0) + delta (v1 - 1/2)
