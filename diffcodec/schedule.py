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


def time_grid(steps: int) -> Tensor:
    """t_0 = 1 > t_1 > ... > t_T = 0, evenly spaced."""
    return torch.linspace(1.0, 0.0, steps + 1)
