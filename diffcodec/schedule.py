"""Noise schedule in terms of the log-SNR gamma(t) (DESIGN.md section 1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LinearSchedule(nn.Module):
    """gamma(t) = gamma_min + (gamma_max - gamma_min) * t, gamma_min learned, gamma_max fixed."""

    def __init__(self, gamma_min: float = -12.0, gamma_max: float = 6.0) -> None:
        super().__init__()
        self.gamma_min = nn.Parameter(torch.tensor(float(gamma_min)))
        self.register_buffer("gamma_max", torch.tensor(float(gamma_max)))

    def forward(self, t: Tensor) -> Tensor:
        """gamma(t) = -log SNR(t), monotone increasing on [0, 1]."""
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t


def alpha(gamma: Tensor) -> Tensor:
    """alpha_t = sqrt(sigmoid(-gamma_t))."""
    return torch.sigmoid(-gamma).sqrt()


def sigma(gamma: Tensor) -> Tensor:
    """sigma_t = sqrt(sigmoid(gamma_t))."""
    return torch.sigmoid(gamma).sqrt()


def time_grid(steps: int, grid_steps: int | None = None) -> Tensor:
    """t_0 = 1 > t_1 > ... > t_T: the first T + 1 points of the grid of `grid_steps` (default T) equal intervals
    from 1 to 0, t_i = 1 - i / grid_steps.

    grid_steps = T is DESIGN.md's grid, ending at t_T = 0. grid_steps > T ends the chain early, at a z_T that
    still holds noise, and p(x | z_T) codes the pixels from there; the times are exactly those of the longer
    grid, so a network trained on it sees no new gamma (it knows only the gammas it was trained on)."""
    return torch.linspace(1.0, 0.0, (grid_steps or steps) + 1)[: steps + 1]
