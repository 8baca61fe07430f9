"""The network over a large image in overlapping tiles, so memory stays bounded at any size.

The tiling is a fixed function of the image size (the same in encoder and decoder): images of at most
TILE_ABOVE pixels run whole; larger ones are cut into CORE x CORE tiles, each run with HALO pixels of
context on every side (clipped at the border), and only each tile's core is kept.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

TILE_ABOVE = 2**21  # pixels: Kodak-sized and 2-megapixel images run whole
CORE = 1024  # kept pixels per tile side
HALO = 64  # context pixels on each side of a tile (a multiple of the U-Net's 16)

Net = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def tiles(height: int, width: int, core: int = CORE) -> list[tuple[slice, slice]]:
    """The core regions (rows, columns) that cover an image, row by row."""
    return [(slice(y, min(y + core, height)), slice(x, min(x + core, width)))
            for y in range(0, height, core) for x in range(0, width, core)]


def predict_tiled(net: Net, z: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """(eps_hat, s_hat) of `net` on z (1, C, H, W), in tiles when H W > TILE_ABOVE."""
    h, w = z.shape[-2:]
    core, halo = CORE, HALO
    if h * w <= TILE_ABOVE:
        return net(z, gamma)
    eps_hat, s_hat = torch.empty_like(z), torch.empty_like(z)
    for rows, cols in tiles(h, w, core):
        y0, x0 = max(rows.start - halo, 0), max(cols.start - halo, 0)
        y1, x1 = min(rows.stop + halo, h), min(cols.stop + halo, w)
        e, s = net(z[..., y0:y1, x0:x1], gamma)
        keep = (..., slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0))
        eps_hat[..., rows, cols], s_hat[..., rows, cols] = e[keep], s[keep]
    return eps_hat, s_hat
