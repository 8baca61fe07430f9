"""Building blocks of the U-Net: no layer looks at spatial statistics, so any image size
(and any tiling) sees the same per-pixel computation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GammaEmbedding(nn.Module):
    """Fourier features of the normalised log-SNR gamma, then a small MLP."""

    def __init__(self, dim: int, frequencies: int = 16, gamma_range: tuple[float, float] = (-13.0, 7.0)) -> None:
        super().__init__()
        self.gamma_range = gamma_range
        freqs = math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32) / 2**4
        self.register_buffer("freqs", freqs, persistent=False)  # a constant: not part of the weights
        self.mlp = nn.Sequential(nn.Linear(2 * frequencies, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, gamma: Tensor) -> Tensor:
        lo, hi = self.gamma_range
        g = ((gamma - lo) / (hi - lo)).reshape(-1, 1)  # (B, 1) in about [0, 1]
        angles = g * self.freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=1))


class ResBlock(nn.Module):
    """x + conv(silu(conv(silu(x)) * (1 + scale(emb)) + shift(emb)))."""

    def __init__(self, channels: int, emb_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(x))
        h = F.silu(h * (1 + scale) + shift)
        return x + self.conv2(h)


class Stage(nn.Module):
    """A run of residual blocks at one resolution."""

    def __init__(self, channels: int, blocks: int, emb_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(channels, emb_dim) for _ in range(blocks))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x, emb)
        return x


class Down(nn.Module):
    """Halve the resolution with a strided convolution."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Up(nn.Module):
    """Double the resolution: a 1x1 convolution to 4 * c_out channels, then pixel shuffle."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, 4 * c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(x), 2)
