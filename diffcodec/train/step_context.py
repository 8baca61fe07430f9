"""Fitting a model's step context networks (step_context.py), the UQDM frozen.

Training crops go down the chain to z_t of each step (each earlier step draws z_s from its own posterior family,
as the model's codec.json sends it; no network), the U-Net runs once there for the step's prior, and z_s is drawn
from the step's posterior. The step's network then learns, for a random group g of each batch, what the step costs
under the refined prior: the Gaussian KL(q || p') of a Gaussian REC step, -log2 p'(z_s | z_t) - log2 delta of a
uniform one (UQ or uniform REC). A pool of such crops is made once per step and sampled with replacement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..context import GROUPS, channel_means
from ..errors import BadInputError
from ..nn.context import ContextConfig, ContextNet
from ..rec.family import StepPrior, kl_bits
from ..refine import refine
from ..step_context import STEP_CONTEXT_FILE, group_prior, load_step_nets, refined_inputs, save_step_nets
from ..steps import StepContext
from ..uqdm import UQDM, denoise, posterior, posterior_width, prior, step_bits, to_unit
from ..zoo import LoadedModel, load_model
from .chain import chain_to, sample_posterior, step_families
from .fitting import fit, keep_earlier_fit, seeded, seeded_crops, start_nets

POOL_BATCH = 32  # crops per U-Net call while a pool is made


@dataclass
class StepContextOptions:
    """Everything `diffcodec train-step-context` accepts (see its --help)."""

    data: Path
    model: str = "default"
    steps: tuple[int, ...] = ()  # the steps (1 = t_0 -> t_1) to fit; () = every step of the model's default T
    iters: int = 3000
    batch: int = 16
    crop: int = 64
    pool: int = 2048
    val_crops: int = 256
    lr: float = 1e-3
    width: int | None = None  # channels of a new network (None: 16); a network from `init` keeps its own
    blocks: int | None = None  # residual blocks (None: 2, or those of `init`; more than init's deepen its networks)
    eval_every: int = 500
    seed: int = 0
    out: Path | None = None  # default: step_context.pt beside the model file
    val: Path | None = None  # held-out photos (default: 1 in 25 of data, by name hash)
    init: Path | None = None  # a step context file to start from
    refined: bool = True  # read the post-filter's x_hat' where the model has one (refine.pt), else the U-Net's x_hat


@dataclass
class StepContextSummary:
    """How a fit went: per step, the held-out bits per sub-pixel under the plain prior and with context."""

    path: Path
    seconds: float
    plain_bits: dict[int, float]
    context_bits: dict[int, float]
    parameters: int


class StepPool:
    """Crops taken to step i: the step's context (z_t, x_hat, mu_p, sigma_p, delta; with `refiner`, the post-filter
    network of rung i, also x_hat') and q's mean and a z_s ~ q."""

    def __init__(self, model: UQDM, families: list[str], i: int, pixels: Tensor, generator: torch.Generator,
                 refiner: ContextNet | None = None) -> None:
        gammas = model.gammas(len(families)).detach()
        parts = []
        for k in range(0, len(pixels), POOL_BATCH):
            x = to_unit(pixels[k : k + POOL_BATCH])
            z = chain_to(gammas, families, i, x, generator)
            eps_hat, s_hat = model.predict(z, gammas[i])
            mu_p, sigma_p = prior(z, eps_hat, s_hat, gammas[i], gammas[i + 1])
            mu_q, delta = posterior(z, x, gammas[i], gammas[i + 1])
            x_hat = denoise(z, eps_hat, gammas[i]).clamp(-1, 1)
            x_refined = x_hat if refiner is None else refine(refiner, x_hat, z, s_hat)
            parts.append((z, x_hat, x_refined, mu_p, sigma_p, mu_q,
                          sample_posterior(families[i], mu_q, delta, generator)))
        self.z_t, self.x_hat, x_refined, self.mu_p, self.sigma_p, self.mu_q, self.z_s = (torch.cat(t) for t in zip(*parts))
        self.x_refined = None if refiner is None else x_refined
        self.family = families[i]
        self.gamma_t, self.gamma_s = gammas[i], gammas[i + 1]
        self.delta = posterior_width(self.gamma_t, self.gamma_s)

    def __len__(self) -> int:
        return len(self.z_t)

    def bits(self, net: ContextNet | None, idx: Tensor, g: int) -> Tensor:
        """What the crops `idx` cost (B, 3, H, W) under group g's prior (the plain prior for net None); only the
        entries of group g's pixels are the group's bits."""
        z_t, mu_p, sigma_p, mu_q, z_s = self.z_t[idx], self.mu_p[idx], self.sigma_p[idx], self.mu_q[idx], self.z_s[idx]
        if net is not None:
            ctx = refined_inputs(StepContext(0, 0, z_t, self.gamma_t, self.gamma_s, mu_p, sigma_p, self.delta, {},
                                             self.x_hat[idx], None if self.x_refined is None else self.x_refined[idx]))
            mu, sigma_p, kappa = group_prior(net, ctx, z_s, g)
            mu_p = _channel_means(mu, kappa, z_s)
        if self.family == "gaussian":
            return kl_bits("gaussian", StepPrior(mu_p, sigma_p, self.delta), mu_q)
        return step_bits(z_s, mu_p, sigma_p, self.delta)


def _channel_means(mu: Tensor, kappa: Tensor, z_s: Tensor) -> Tensor:
    """context.channel_means over a batch (B, 3, H, W)."""
    return channel_means(mu.transpose(0, 1), kappa.transpose(0, 1), z_s.transpose(0, 1)).transpose(0, 1)


@torch.no_grad()
def held_out_bits(net: ContextNet | None, pool: StepPool) -> float:
    """Bits per sub-pixel of the step on the pool's crops, all groups (the plain prior for net None)."""
    idx = torch.arange(len(pool))
    total = sum(float(pool.bits(net, idx, g)[..., dy::2, dx::2].double().sum()) for g, (dy, dx) in enumerate(GROUPS))
    return total / pool.z_t.numel()


def _read_nets(loaded: LoadedModel, refine_hash: bytes | None) -> dict[int, bytes] | None:
    """Per step index i, the hash of the post-filter network whose x_hat' step i + 1 reads (rung i's; a step absent
    reads the U-Net's x_hat); None if that post-filter is not beside the model."""
    if refine_hash is None:
        return {}
    fit = loaded.post_filter(refine_hash)
    return None if fit is None else fit.net_hashes


def _initial_nets(opts: StepContextOptions, loaded: LoadedModel, refine_hash: bytes | None,
                  steps: list[int]) -> tuple[dict[int, ContextNet], dict[int, ContextNet]]:
    """(networks to train, networks kept), by step index. To train: those of `opts.init` (made for this model;
    deepened to `opts.blocks`), else new weights from the seed. Kept: the other steps of `opts.init`, as they are, so
    that refitting some steps writes a whole file; each must read the same x_hat' under the new post-filter as under
    the one it was fitted on (the same network at its rung, or none in both)."""
    if opts.init is None:
        config = ContextConfig(opts.width or 16, 2 if opts.blocks is None else opts.blocks)
        return seeded(opts.seed, lambda: {i: ContextNet(config) for i in steps}), {}
    start = load_step_nets(opts.init, b"")  # its file hash names coded chunks only: not needed to train
    if start.model_hash != loaded.weights_hash or not set(steps) <= set(start.nets):
        raise BadInputError(f"--init {opts.init}: made for model {start.model_hash.hex()} and steps "
                            f"{sorted(i + 1 for i in start.nets)}, not {loaded.weights_hash.hex()} and "
                            f"{[i + 1 for i in steps]}")
    kept = {i: net for i, net in start.nets.items() if i not in steps}
    if start.refine_hash != refine_hash:
        read = lambda h: "the U-Net's x_hat" if h is None else f"post-filter {h.hex()}"  # noqa: E731
        was, now = _read_nets(loaded, start.refine_hash), _read_nets(loaded, refine_hash) or {}
        moved = sorted(i + 1 for i in kept if was is None or was.get(i) != now.get(i))
        if moved:
            raise BadInputError(f"--init {opts.init}: its networks read {read(start.refine_hash)}, the model's steps "
                                f"now {read(refine_hash)}, whose x_hat' differs at step(s) "
                                f"{', '.join(map(str, moved))}: refit those too (--step), or refit every step (leave --step "
                                f"out)")
    return start_nets(start.nets, steps, opts.width, opts.blocks, opts.seed, opts.init, lambda i: f"step {i + 1}"), kept


def train_step_context(opts: StepContextOptions, log: Callable[[str], None] = print,
                       report: Callable[[int, int, float], None] | None = None) -> StepContextSummary:
    """Fit the step context networks of `opts.model` for `opts.steps`, one after the other; write them
    (atomically, after every evaluation) beside the model, with the other steps of `opts.init` as they were."""
    t0 = time.perf_counter()
    loaded = load_model(opts.model)
    T = loaded.default_steps
    families = step_families(loaded.coding.coders(T))
    refiners = loaded.refiners if opts.refined else None
    steps = sorted({s - 1 for s in opts.steps}) if opts.steps else list(range(T))
    if not all(0 <= i < T for i in steps):
        raise BadInputError(f"--step must be in [1, {T}] for model {loaded.name!r} (its codec.json codes {T} steps), "
                            f"got {sorted(s for s in opts.steps)}")
    out = opts.out or loaded.path.parent / STEP_CONTEXT_FILE
    keep_earlier_fit(out, loaded.path.parent / STEP_CONTEXT_FILE)
    rng, gen, train_pix, val_pix = seeded_crops(opts.data, opts.val, opts.crop, opts.pool, opts.val_crops, opts.seed)
    refine_hash = None if refiners is None else refiners.weights_hash
    nets, kept = _initial_nets(opts, loaded, refine_hash, steps)
    plain, fitted = {}, {}
    for n, i in enumerate(steps):
        log(f"step {i + 1} ({families[i]}): taking {len(train_pix)} training and {len(val_pix)} held-out crops to "
            f"z_t ...")
        with torch.no_grad():
            refiner = None if refiners is None else refiners.nets.get(i)
            train_pool = StepPool(loaded.model, families, i, train_pix, gen, refiner)
            val_pool = StepPool(loaded.model, families, i, val_pix, gen, refiner)
        net = nets[i]
        plain[i + 1] = held_out_bits(None, val_pool)
        from_init = f", --init {held_out_bits(net, val_pool):.4f}" if opts.init else ""
        log(f"step {i + 1}: held-out bits per sub-pixel: plain prior {plain[i + 1]:.4f}{from_init}")

        def batch_loss() -> Tensor:
            idx = torch.from_numpy(rng.integers(0, len(train_pool), opts.batch))
            g = int(rng.integers(0, len(GROUPS)))
            dy, dx = GROUPS[g]
            return train_pool.bits(net, idx, g)[..., dy::2, dx::2].mean()

        def evaluate(it: int) -> None:
            fitted[i + 1] = held_out_bits(net, val_pool)
            log(f"step {i + 1}, iteration {it}: held-out bits {fitted[i + 1]:.4f} "
                f"(plain {plain[i + 1]:.4f}, {100 * (fitted[i + 1] / plain[i + 1] - 1):+.2f}%)")
            written = {**kept, **{k: nets[k] for k in steps[: n + 1]}}
            save_step_nets(out, dict(sorted(written.items())), loaded.weights_hash, refine_hash)

        done = n * opts.iters
        fit(net, batch_loss, opts.iters, opts.lr, opts.eval_every, evaluate,
            None if report is None else (lambda it, loss: report(done + it, len(steps) * opts.iters, loss)))
    n_params = sum(p.numel() for net in nets.values() for p in net.parameters())
    return StepContextSummary(out, time.perf_counter() - t0, plain, fitted, n_params)
