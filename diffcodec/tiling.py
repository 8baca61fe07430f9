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


def run_tiled(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """fn(x) for a per-pixel network fn: (1, C, H, W) -> (1, C', H, W), in tiles when H W > TILE_ABOVE."""
    h, w = x.shape[-2:]
    if h * w <= TILE_ABOVE:
        return fn(x)
    out: Tensor | None = None
    for rows, cols in tiles(h, w, CORE):
        y0, x0 = max(rows.start - HALO, 0), max(cols.start - HALO, 0)
        y1, x1 = min(rows.stop + HALO, h), min(cols.stop + HALO, w)
        y = fn(x[..., y0:y1, x0:x1])
        if out is None:
            out = y.new_empty(*y.shape[:-2], h, w)
        out[..., rows, cols] = y[..., slice(rows.start - y0, rows.stop - y0), slice(cols.start - x0, cols.stop - x0)]
    assert out is not None
    return out


def predict_tiled(net: Net, z: Tensor, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """(eps_hat, s_hat) of `net` on z (1, C, H, W), in tiles when H W > TILE_ABOVE."""
    c = z.shape[1]
    both = run_tiled(lambda t: torch.cat(net(t, gamma), 1), z)
    return both[:, :c], both[:, c:]
