"""What the fits of the small networks (pixel context, step context, post-filter) share, the U-Net frozen: seeded
crops, seeded new weights, and the Adam loop with a cosine learning rate, held-out measurements and saves."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from ..context import earlier_fit_name
from ..errors import BadInputError
from ..nn.context import ContextNet, deepen
from ..zoo import weights_hash
from .data import train_val_crops

T = TypeVar("T")


def seeded_crops(data: Path, val: Path | None, crop: int, pool: int, val_crops: int,
                 seed: int) -> tuple[np.random.Generator, torch.Generator, Tensor, Tensor]:
    """The fit's random streams from `seed` (numpy: crops and batches; torch: noise), and the `pool` training and
    `val_crops` held-out crops drawn with them (train_val_crops)."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        train_pix, val_pix = train_val_crops(data, val, crop, pool, val_crops, rng)
    return rng, gen, train_pix, val_pix


def keep_earlier_fit(out: Path, beside: Path) -> None:
    """Before a fit writes `out` over the model's file `beside` (context.pt, step_context.pt, refine.pt), copy that
    file to its earlier-fit name (context.earlier_fit_name): files coded with it then still decode in full."""
    if not out.is_file() or out.resolve() != beside.resolve():
        return
    earlier = out.with_name(earlier_fit_name(beside.name, weights_hash(out)))
    if not earlier.exists():
        tmp = earlier.with_suffix(".tmp")
        shutil.copyfile(out, tmp)
        os.replace(tmp, earlier)


def seeded(seed: int, make: Callable[[], T]) -> T:
    """make() under torch's seed `seed` (new weights from the seed), the caller's random state left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def start_nets(start: dict[int, ContextNet], keys: list[int], width: int | None, blocks: int | None, seed: int,
               where: Path, label: Callable[[int], str]) -> dict[int, ContextNet]:
    """The networks `keys` of a start file (`start`, read from `where`; label(key) names one, as "step 3"), to train
    further: each keeps its width (a `width` other than its own is refused) and is deepened to `blocks` residual
    blocks (None: its own; the new ones start as the identity, so training starts from the file's function; fewer
    than its own is refused)."""
    for k in keys:
        net = start[k]
        if width is not None and width != net.config.width:
            raise BadInputError(f"--width {width}: the network of {label(k)} in --init {where} has "
                                f"{net.config.width} channels, which a refit keeps (leave --width out)")
        if blocks is not None and blocks < net.config.blocks:
            raise BadInputError(f"--blocks {blocks}: the network of {label(k)} in --init {where} has "
                                f"{net.config.blocks} blocks; a refit can add blocks, not remove them")
    return seeded(seed, lambda: {k: (start[k] if blocks is None else deepen(start[k], blocks)).requires_grad_(True)
                                 .train() for k in keys})


def fit(net: nn.Module, batch_loss: Callable[[], Tensor], iters: int, lr: float, eval_every: int,
        evaluate: Callable[[int], None], report: Callable[[int, float], None] | None = None) -> None:
    """`iters` Adam steps on batch_loss(), the learning rate on a cosine from lr to lr / 10; report(it, loss) after
    step it, evaluate(it) every `eval_every` steps and after the last."""
    opt = torch.optim.Adam(net.parameters(), lr)
    for it in range(iters):
        for group in opt.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * it / iters)))
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if report:
            report(it + 1, float(loss))
        if (it + 1) % eval_every == 0 or it + 1 == iters:
            evaluate(it + 1)


__all__ = ["fit", "keep_earlier_fit", "seeded", "seeded_crops", "start_nets"]
