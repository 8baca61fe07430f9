"""Fitting a model's post-filter networks (refine.py), the UQDM frozen.

Training crops go down the codec's chain to z at t_k of each rung k (train/chain.py), the U-Net runs once there for
x_hat and s_hat, and the rung's network learns x_hat' by mean squared error against the crop. A pool of such crops is
made once per rung and sampled with replacement; the held-out figure is the mean PSNR of the held-out crops, rounded
to pixels as the decoder shows them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import BadInputError
from ..nn.context import ContextNet
from ..refine import REFINE_FILE, load_refiners, new_refiner, refine, save_refiners
from ..uqdm import UQDM, denoise, to_pixel_units, to_unit
from ..zoo import load_model
from .chain import chain_to, step_families
from .fitting import fit, keep_earlier_fit, seeded, seeded_crops, start_nets

POOL_BATCH = 32  # crops per U-Net call while a pool is made


@dataclass
class RefineOptions:
    """Everything `diffcodec train-refine` accepts (see its --help)."""

    data: Path
    model: str = "default"
    rungs: tuple[int, ...] = ()  # the lossy rungs (1 = after the first step) to fit; () = 1..T of the codec.json
    iters: int = 6000
    batch: int = 16
    crop: int = 64
    pool: int = 2048
    val_crops: int = 256
    lr: float = 1e-3
    width: int | None = None  # channels of a new network (None: 16); a network from `init` keeps its own
    blocks: int | None = None  # residual blocks (None: 2, or those of `init`; more than init's deepen its networks)
    eval_every: int = 500
    seed: int = 0
    out: Path | None = None  # default: refine.pt beside the model file
    val: Path | None = None  # held-out photos (default: 1 in 25 of data, by name hash)
    init: Path | None = None  # a refine file to start from


@dataclass
class RefineSummary:
    """How a fit went: per rung, the held-out PSNR (dB) of the U-Net's x_hat and of the refined x_hat'."""

    path: Path
    seconds: float
    plain_psnr: dict[int, float]
    refined_psnr: dict[int, float]
    parameters: int


class RungPool:
    """Crops taken to rung k: the network's inputs (x_hat, z, s_hat) there and the crops x, all (N, 3, H, W)."""

    def __init__(self, model: UQDM, families: list[str], k: int, pixels: Tensor, generator: torch.Generator) -> None:
        gammas = model.gammas(len(families)).detach()
        parts = []
        for n in range(0, len(pixels), POOL_BATCH):
            x = to_unit(pixels[n : n + POOL_BATCH])
            z = chain_to(gammas, families, k, x, generator)
            eps_hat, s_hat = model.predict(z, gammas[k])
            parts.append((denoise(z, eps_hat, gammas[k]).clamp(-1, 1), z, s_hat, x))
        self.x_hat, self.z, self.s_hat, self.x = (torch.cat(t) for t in zip(*parts))

    def __len__(self) -> int:
        return len(self.x)

    def refined(self, net: ContextNet | None, idx: Tensor) -> Tensor:
        """x_hat' of the crops `idx` (x_hat itself for net None)."""
        if net is None:
            return self.x_hat[idx]
        return refine(net, self.x_hat[idx], self.z[idx], self.s_hat[idx])


@torch.no_grad()
def held_out_psnr(net: ContextNet | None, pool: RungPool) -> float:
    """Mean PSNR (dB) of the pool's crops as the decoder shows them (rounded to pixels), x_hat' against x."""
    shown = to_pixel_units(pool.refined(net, torch.arange(len(pool)))).round().clamp(0, 255)
    mse = (shown - to_pixel_units(pool.x).round()).square().flatten(1).mean(1).double()
    return float((10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).mean())


def _initial_nets(opts: RefineOptions, model_hash: bytes,
                  rungs: list[int]) -> tuple[dict[int, ContextNet], dict[int, ContextNet]]:
    """(networks to train, networks kept), by rung. To train: those of `opts.init` (made for this model; deepened to
    `opts.blocks`), else new ones from the seed. Kept: the other rungs of `opts.init`, as they are, so that refitting
    some rungs writes a whole file."""
    if opts.init is None:
        width, blocks = opts.width or 16, 2 if opts.blocks is None else opts.blocks
        return seeded(opts.seed, lambda: {k: new_refiner(width, blocks) for k in rungs}), {}
    start = load_refiners(opts.init, b"")
    if start.model_hash != model_hash or not set(rungs) <= set(start.nets):
        raise BadInputError(f"--init {opts.init}: made for model {start.model_hash.hex()} and rungs "
                            f"{sorted(start.nets)}, not {model_hash.hex()} and {rungs}")
    kept = {k: net for k, net in start.nets.items() if k not in rungs}
    return start_nets(start.nets, rungs, opts.width, opts.blocks, opts.seed, opts.init, lambda k: f"rung {k}"), kept


def train_refine(opts: RefineOptions, log: Callable[[str], None] = print,
                 report: Callable[[int, int, float], None] | None = None) -> RefineSummary:
    """Fit the post-filter networks of `opts.model` for `opts.rungs`, one after the other; write them
    (atomically, after every evaluation) beside the model, with the other rungs of `opts.init` as they were."""
    t0 = time.perf_counter()
    loaded = load_model(opts.model)
    T = loaded.default_steps
    families = step_families(loaded.coding.coders(T))
    rungs = sorted(set(opts.rungs)) if opts.rungs else list(range(1, T + 1))
    if not all(1 <= k <= T for k in rungs):
        raise BadInputError(f"--rung must be in [1, {T}] for model {loaded.name!r} (its codec.json codes {T} steps; "
                            f"rung {T + 1} is lossless), got {rungs}")
    out = opts.out or loaded.path.parent / REFINE_FILE
    keep_earlier_fit(out, loaded.path.parent / REFINE_FILE)
    rng, gen, train_pix, val_pix = seeded_crops(opts.data, opts.val, opts.crop, opts.pool, opts.val_crops, opts.seed)
    nets, kept = _initial_nets(opts, loaded.weights_hash, rungs)
    plain, fitted = {}, {}
    for n, k in enumerate(rungs):
        log(f"rung {k}: taking {len(train_pix)} training and {len(val_pix)} held-out crops to z_t ...")
        with torch.no_grad():
            train_pool = RungPool(loaded.model, families, k, train_pix, gen)
            val_pool = RungPool(loaded.model, families, k, val_pix, gen)
        net = nets[k]
        plain[k] = held_out_psnr(None, val_pool)
        from_init = f", --init {held_out_psnr(net, val_pool):.3f} dB" if opts.init else ""
        log(f"rung {k}: held-out PSNR of x_hat {plain[k]:.3f} dB{from_init}")

        def batch_loss() -> Tensor:
            idx = torch.from_numpy(rng.integers(0, len(train_pool), opts.batch))
            return (train_pool.refined(net, idx) - train_pool.x[idx]).square().mean()  # MSE in [-1, 1] units

        def evaluate(it: int) -> None:
            fitted[k] = held_out_psnr(net, val_pool)
            log(f"rung {k}, iteration {it}: held-out PSNR {fitted[k]:.3f} dB (x_hat {plain[k]:.3f}, "
                f"{fitted[k] - plain[k]:+.3f} dB)")
            written = {**kept, **{j: nets[j] for j in rungs[: n + 1]}}
            save_refiners(out, dict(sorted(written.items())), loaded.weights_hash)

        done = n * opts.iters  # the bar shows the batch's PSNR: MSE of 4 (the [-1, 1] range squared) is 0 dB
        fit(net, batch_loss, opts.iters, opts.lr, opts.eval_every, evaluate,
            None if report is None else (lambda it, loss: report(done + it, len(rungs) * opts.iters,
                                                                 10 * math.log10(4.0 / max(loss, 1e-12)))))
    n_params = sum(p.numel() for net in nets.values() for p in net.parameters())
    return RefineSummary(out, time.perf_counter() - t0, plain, fitted, n_params)
