"""The networks over an image in overlapping tiles, run on WORKERS threads, so memory stays bounded at any size and
both CPU cores work.

The tiling is a fixed function of the image size and the file's format version (the same in encoder and decoder):
images above TILE_ABOVE pixels are cut into CORE x CORE tiles; from format 3 (`split`), smaller images whose longer
side has at least SPLIT_FROM pixels are cut into two halves across that side, at a multiple of 16 (the U-Net's
grid stays aligned); other images run whole. Each tile runs with HALO pixels of context on every side (clipped at
the border), and only its core is kept. Each tile is computed with one intra-op thread (determinism.py), so its
values do not depend on the threads; the tiles of one call run side by side on WORKERS threads.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from .determinism import one_thread

TILE_ABOVE = 2**21  # pixels: Kodak-sized and 2-megapixel images run whole or in halves
CORE = 1024  # kept pixels per tile side
HALO = 64  # context pixels on each side of a tile (a multiple of the U-Net's 16)
SPLIT_FROM = 256  # from format 3, an image whose longer side has this many pixels runs as two halves
WORKERS = 2  # threads the tiles of one network call run on
SPLIT_SINCE = 3  # the first format version whose networks run in halves

Net = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
Region = tuple[slice, slice]


def tiles(height: int, width: int, core: int = CORE) -> list[Region]:
    """CORE x CORE core regions (rows, columns) that cover an image, row by row."""
    return [(slice(y, min(y + core, height)), slice(x, min(x + core, width)))
            for y in range(0, height, core) for x in range(0, width, core)]


def regions(height: int, width: int, split: bool = True) -> list[Region]:
    """The core regions of one network call on a height x width image (see the module docstring)."""
    if height * width > TILE_ABOVE:
        return tiles(height, width, CORE)
    if split and max(height, width) >= SPLIT_FROM:
        if height >= width:
            cut = height // 2 // 16 * 16
            return [(slice(0, cut), slice(0, width)), (slice(cut, height), slice(0, width))]
        cut = width // 2 // 16 * 16
        return [(slice(0, height), slice(0, cut)), (slice(0, height), slice(cut, width))]
    return [(slice(0, height), slice(0, width))]


def run_tiled(fn: Callable[[Tensor], Tensor], x: Tensor, split: bool = True) -> Tensor:
    """fn(x) for a per-pixel network fn: (B, C, H, W) -> (B, C', H, W), tile by tile (`regions`; `split`: the
    halves of format 3)."""
    h, w = x.shape[-2:]
    cores = regions(h, w, split)
    if len(cores) == 1:
        return fn(x)
    grad = torch.is_grad_enabled()  # grad mode is per thread: the workers take the caller's

    def core(region: Region) -> Tensor:
        rows, cols = region
        y0, x0 = max(rows.start - HALO, 0), max(cols.start - HALO, 0)
        y1, x1 = min(rows.stop + HALO, h), min(cols.stop + HALO, w)
        with torch.set_grad_enabled(grad), one_thread():
            y = fn(x[..., y0:y1, x0:x1])
        return y[..., rows.start - y0 : rows.stop - y0, cols.start - x0 : cols.stop - x0]

    out: Tensor | None = None
    with ThreadPoolExecutor(WORKERS) as pool:
        for (rows, cols), y in zip(cores, pool.map(core, cores)):  # each tile stored as it comes: memory stays bounded
            if out is None:
                out = y.new_empty(*y.shape[:-2], h, w)
            out[..., rows, cols] = y
    assert out is not None
    return out


def predict_tiled(net: Net, z: Tensor, gamma: Tensor, split: bool = True) -> tuple[Tensor, Tensor]:
    """(eps_hat, s_hat) of `net` on z (1, C, H, W), tile by tile as `run_tiled`."""
    c = z.shape[1]
    both = run_tiled(lambda t: torch.cat(net(t, gamma), 1), z, split)
    return both[:, :c], both[:, c:]
