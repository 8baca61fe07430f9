"""Fitting a model's pixel context network (context.py), the UQDM frozen.

Training crops go down the forward chain to z_T (no network), the U-Net runs once there, and the context network
learns -log2 P(x | z_T, groups < g) for a random group g of each batch: exactly the bits of the lossless chunk.
A pool of such crops is made once (the U-Net's pass is most of the cost) and sampled with replacement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..context import CONTEXT_FILE, GROUPS, ChainEnd, context_bits, group_mask, load_context, save_context
from ..errors import BadInputError
from ..nn.context import ContextConfig, ContextNet
from ..uqdm import UQDM, denoise, forward_chain, pixel_bits, pixel_prior, to_unit
from ..zoo import load_model
from .fitting import fit, keep_earlier_fit, seeded, seeded_crops

POOL_BATCH = 32  # crops per U-Net call while the pool is made


@dataclass
class ContextOptions:
    """Everything `diffcodec train-context` accepts (see its --help)."""

    data: Path
    model: str = "default"
    steps: int | None = None  # T of the chain end (default: the model's default step count)
    iters: int = 3000
    batch: int = 16
    crop: int = 64
    pool: int = 3072  # training crops taken to z_T once
    val_crops: int = 256
    lr: float = 1e-3
    width: int = 32
    blocks: int = 2
    eval_every: int = 500
    seed: int = 0
    out: Path | None = None  # default: context.pt beside the model file
    val: Path | None = None  # held-out photos (default: 1 in 25 of data, by name hash)
    init: Path | None = None  # a context file to start from (its width and depth replace width and blocks)


@dataclass
class ContextSummary:
    """How a fit went: held-out bits of the pixels per sub-pixel, factorised and with context."""

    path: Path
    iters: int
    seconds: float
    factorised_bits: float
    context_bits: float
    parameters: int


def chain_ends(model: UQDM, pixels: torch.Tensor, steps: int, generator: torch.Generator) -> ChainEnd:
    """z_T of the forward chain of each crop and the U-Net's view of it, in batches of POOL_BATCH."""
    gammas = model.gammas(steps).detach()
    parts = []
    for i in range(0, len(pixels), POOL_BATCH):
        x = to_unit(pixels[i : i + POOL_BATCH])
        z = forward_chain(x, gammas, generator)[-1]
        eps_hat, s_hat = model.predict(z, gammas[steps])
        m, b = pixel_prior(z, eps_hat, s_hat, gammas[steps])
        parts.append(ChainEnd(z, denoise(z, eps_hat, gammas[steps]).clamp(-1, 1), s_hat, m, b))
    return ChainEnd(*(torch.cat(t) for t in zip(*parts)))


def _take(end: ChainEnd, idx: torch.Tensor) -> ChainEnd:
    return ChainEnd(*(t[idx] for t in end))


@torch.no_grad()
def held_out_bits(net: ContextNet, end: ChainEnd, pixels: torch.Tensor) -> tuple[float, float]:
    """(factorised, context) bits per sub-pixel of the pixels, all groups."""
    h, w = pixels.shape[-2:]
    factorised = float(pixel_bits(pixels, end.m, end.b).mean())
    total = 0.0
    for g in range(len(GROUPS)):
        total += float(context_bits(net, end, pixels, g)[..., group_mask(g, h, w)].sum())
    return factorised, total / pixels.numel()


def _initial_net(opts: ContextOptions, model_hash: bytes, steps: int) -> ContextNet:
    """The network to train: a copy of `opts.init` (made for this model and T), or new weights from the seed."""
    if opts.init is None:
        return seeded(opts.seed, lambda: ContextNet(ContextConfig(opts.width, opts.blocks)))
    start = load_context(opts.init, b"")  # its file hash names coded chunks only: not needed to train
    if start.model_hash != model_hash or start.steps != steps:
        raise BadInputError(f"--init {opts.init}: made for model {start.model_hash.hex()} at T = {start.steps}, "
                            f"not {model_hash.hex()} at T = {steps}")
    return start.net.requires_grad_(True).train()


def train_context(opts: ContextOptions, log: Callable[[str], None] = print,
                  report: Callable[[int, int, float], None] | None = None) -> ContextSummary:
    """Fit the context network of `opts.model` at T = `opts.steps`; write it (atomically) beside the model."""
    t0 = time.perf_counter()
    loaded = load_model(opts.model)
    steps = loaded.default_steps if opts.steps is None else opts.steps
    if not 1 <= steps <= loaded.model.steps:
        raise BadInputError(f"--steps must be in [1, {loaded.model.steps}] for model {loaded.name!r}, got {steps}")
    out = opts.out or loaded.path.parent / CONTEXT_FILE
    keep_earlier_fit(out, loaded.path.parent / CONTEXT_FILE)
    rng, gen, train_pix, val_pix = seeded_crops(opts.data, opts.val, opts.crop, opts.pool, opts.val_crops, opts.seed)
    with torch.no_grad():
        log(f"taking {len(train_pix)} training and {len(val_pix)} held-out crops to z_{steps} ...")
        train_end = chain_ends(loaded.model, train_pix, steps, gen)
        val_end = chain_ends(loaded.model, val_pix, steps, gen)
    net = _initial_net(opts, loaded.weights_hash, steps)
    factorised, bits = held_out_bits(net, val_end, val_pix)
    from_init = f", --init {bits:.4f}" if opts.init else ""
    log(f"held-out pixel bits per sub-pixel: factorised {factorised:.4f}{from_init}")

    def batch_loss() -> torch.Tensor:
        idx = torch.from_numpy(rng.integers(0, len(train_pix), opts.batch))
        g = int(rng.integers(0, len(GROUPS)))
        dy, dx = GROUPS[g]
        return context_bits(net, _take(train_end, idx), train_pix[idx], g)[..., dy::2, dx::2].mean()

    def evaluate(it: int) -> None:
        nonlocal bits
        _, bits = held_out_bits(net, val_end, val_pix)
        log(f"iteration {it}: held-out pixel bits {bits:.4f} (factorised {factorised:.4f})")
        save_context(out, net, steps, loaded.weights_hash)

    fit(net, batch_loss, opts.iters, opts.lr, opts.eval_every, evaluate,
        None if report is None else (lambda it, loss: report(it, opts.iters, loss)))
    n_params = sum(p.numel() for p in net.parameters())
    return ContextSummary(out, opts.iters, time.perf_counter() - t0, factorised, bits, n_params)
