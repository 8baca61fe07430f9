"""Distortion of a decoded image: PSNR and MS-SSIM on RGB, 8-bit (0..255)."""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d

from diffcodec import psnr

__all__ = ["psnr", "ms_ssim", "ms_ssim_db", "MS_SSIM_MIN_SIDE"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli, Bovik 2003, 5 scales
WINDOW, SIGMA = 11, 1.5  # Gaussian window
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2  # (K1 L)^2, (K2 L)^2 with L = 255
MS_SSIM_MIN_SIDE = WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 176: the window fits the coarsest scale


def _gaussian() -> np.ndarray:
    r = np.arange(WINDOW) - (WINDOW - 1) / 2
    g = np.exp(-(r**2) / (2 * SIGMA**2))
    return g / g.sum()


def _filter(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable Gaussian with 'valid' borders on each plane: x (..., H, W) -> (..., H - 10, W - 10)."""
    y = correlate1d(correlate1d(x, g, axis=-1), g, axis=-2)
    r = WINDOW // 2
    return y[..., r:-r, r:-r]


def _ssim_cs(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean SSIM and mean contrast-structure term per channel at one scale; x, y (C, H, W) float64."""
    mu_x, mu_y, xx, yy, xy = _filter(np.stack([x, y, x * x, y * y, x * y]), g)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * cov + C2) / (var_x + var_y + C2)  # cs = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)
    lum = (2 * mu_x * mu_y + C1) / (mu_x**2 + mu_y**2 + C1)  # l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    return (lum * cs).mean((1, 2)), cs.mean((1, 2))


def _halve(x: np.ndarray) -> np.ndarray:
    """2 x 2 average pooling (an odd last row or column is dropped)."""
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w]
    return (x[:, 0::2, 0::2] + x[:, 1::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 1::2]) / 4


def ms_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM of two (H, W, 3) uint8 images: Wang et al. 5 scales, Gaussian 11 x 11 window (sigma 1.5),
    'valid' borders, 2 x 2 average pooling between scales, computed per RGB channel on 0..255 and averaged
    over the channels (the convention of pytorch-msssim). Both sides must be at least 176 pixels."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ms_ssim needs two images of one (H, W, C) shape, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"ms_ssim needs images of at least {MS_SSIM_MIN_SIDE} x {MS_SSIM_MIN_SIDE} pixels, "
                         f"got {a.shape[1]} x {a.shape[0]}")
    g = _gaussian()
    x = a.transpose(2, 0, 1).astype(np.float64)
    y = b.transpose(2, 0, 1).astype(np.float64)
    value = np.ones(a.shape[2])
    for i, w in enumerate(MS_SSIM_WEIGHTS):
        ssim, cs = _ssim_cs(x, y, g)
        last = i == len(MS_SSIM_WEIGHTS) - 1
        value = value * np.maximum(ssim if last else cs, 0) ** w  # prod_j cs_j^w_j * ssim_M^w_M
        x, y = _halve(x), _halve(y)
    return float(value.mean())


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - MS-SSIM) (inf when exact), the usual axis for R-D plots."""
    return math.inf if value >= 1 else -10 * math.log10(1 - value)
