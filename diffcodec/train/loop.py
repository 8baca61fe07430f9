"""The training loop: AdamW, warm-up + cosine, gradient clipping, EMA, periodic validation, atomic
checkpoints with exact resume, and data-parallel ranks under torchrun."""

from __future__ import annotations

import copy
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import BadInputError
from ..uqdm import UQDM, ModelConfig
from ..zoo import WEIGHTS_FILE, load_file, resolve
from . import distributed
from .configs import load_config
from .data import CropCache, list_images, split_holdout

HALF_MIN_NUMEL = 4096  # tensors at least this large are stored as float16
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "train_log.txt"


@dataclass
class TrainOptions:
    """Everything `diffcodec train` accepts (see its --help)."""

    data: Path
    out: Path
    config: str = "default"
    steps: int = 100_000
    batch: int = 32  # crops per step over all ranks
    crop: int = 128
    lr: float = 3e-4
    warmup: int = 500
    clip: float = 1.0
    ema: float = 0.999
    weight_decay: float = 1e-4
    gamma_min: float | None = None  # initial gamma(0) of a new model (default: the config's)
    fixed_gamma: bool = False  # keep gamma_min as it is (fine-tuning a network that knows only its trained gammas)
    val: Path | None = None  # validation folder (default: 1 in 25 photos of DATA, by name hash)
    eval_every: int = 1000
    eval_batches: int = 8
    save_every: int = 500
    log_every: int = 100
    minutes: float | None = None  # stop (with a checkpoint) after this wall time
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps of this run
    resume: bool = False
    init: str | None = None  # start from a model file's weights
    seed: int = 0
    device: str = "auto"
    force: bool = False


@dataclass
class Status:
    """What the progress display shows after each step (main rank only)."""

    step: int
    steps: int
    bpd: float  # running mean of the training loss, bits/dim
    lr: float
    crops_per_s: float
    val_bpd: float | None = None


@dataclass
class Summary:
    """The outcome of a run, as the model card reports it."""

    step: int
    train_bpd: float
    val_bpd: float | None
    parameters: int
    n_train: int
    n_val: int
    config: ModelConfig
    segments: list[dict]  # one per run: hardware, steps, seconds


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary file, then rename over `path`."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_weights(ema: UQDM, path: Path) -> None:
    """Write the EMA weights and config as a model file the codec loads: convolution and linear weights in
    float16 (half the size), every small tensor (biases, the schedule's gamma_min) in float32, since the
    network is sensitive to gamma at the 1e-3 level."""
    state = {k: v.detach().cpu().half() if v.is_floating_point() and v.numel() >= HALF_MIN_NUMEL else v.detach().cpu()
             for k, v in ema.state_dict().items()}
    save_atomic({"config": ema.config.to_dict(), "state_dict": state}, path)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def evaluate(model: UQDM, cache: CropCache, batches: int, batch: int, seed: int = 0) -> float:
    """Mean NELBO (bits/dim) over the same random crops (and noise) of the validation set at every call."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=cache.device).manual_seed(seed)
    vals = [model.nelbo_terms(cache.sample(batch, rng), generator=gen)["bpd"].item() for _ in range(batches)]
    return float(np.mean(vals))


def hardware(world: distributed.World) -> str:
    """The accelerator or CPU this rank runs on, and how many ranks."""
    if world.device.type == "cuda":
        name = torch.cuda.get_device_name(world.device)
    else:
        name = platform.processor() or platform.machine()
        try:
            models = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")]
            name = models[0] if models else name
        except OSError:
            pass
        name = f"{name} ({torch.get_num_threads()} threads)"
    return f"{world.size} x {name}" if world.size > 1 else name


class _Run:
    """The state of one training run on one rank: model, EMA, optimiser, data and random streams."""

    def __init__(self, opts: TrainOptions, world: distributed.World) -> None:
        self.opts, self.world = opts, world
        if opts.batch % world.size:
            raise BadInputError(f"--batch {opts.batch} must be a multiple of the number of processes ({world.size})")
        self.ckpt_path = opts.out / CHECKPOINT_FILE
        checkpoint = self._checkpoint_to_resume()
        init = None
        if checkpoint is not None:
            config = ModelConfig.from_dict(checkpoint["config"])
        elif opts.init:
            init = load_file(resolve(opts.init)[1])
            config = init.config
        else:
            config = load_config(opts.config)
            if opts.gamma_min is not None:
                config = replace(config, gamma_min=opts.gamma_min)
        torch.manual_seed(opts.seed)  # the same initial weights on every rank
        self.model = UQDM(config).to(world.device)
        if init is not None:
            self.model.load_state_dict(init.state_dict())
        distributed.broadcast_parameters(self.model, world)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.model.schedule.requires_grad_(not opts.fixed_gamma)
        learned = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(learned, lr=opts.lr, weight_decay=opts.weight_decay)
        # Each rank its own crops and noise; both streams are saved for an exact resume.
        self.rng = np.random.default_rng([opts.seed, world.rank])
        self.gen = torch.Generator(device=world.device).manual_seed(opts.seed * 1_000_003 + world.rank)
        self.step, self.run_bpd, self.segments = 0, math.nan, []
        if checkpoint is not None:
            self._restore(checkpoint)
        self.train_data, self.val_data = self._data()

    def _checkpoint_to_resume(self) -> dict | None:
        opts = self.opts
        if opts.resume:
            if not self.ckpt_path.is_file():
                raise BadInputError(f"--resume: {self.ckpt_path} not found")
            if opts.init:
                raise BadInputError("--resume and --init exclude each other: resume continues the checkpoint")
            return torch.load(self.ckpt_path, map_location=self.world.device, weights_only=True)
        if not opts.force and any((opts.out / f).exists() for f in (CHECKPOINT_FILE, WEIGHTS_FILE)):
            raise BadInputError(f"{opts.out} already holds a model: pass --resume to continue it or --force to start over")
        return None

    def _restore(self, ck: dict) -> None:
        if len(ck["rng"]) != self.world.size:
            raise BadInputError(f"{self.ckpt_path} was written by {len(ck['rng'])} processes: resume with as many "
                                f"(this run has {self.world.size})")
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.run_bpd, self.segments = ck["step"], ck["run_bpd"], ck["segments"]
        mine = ck["rng"][self.world.rank]
        self.rng.bit_generator.state = mine["numpy"]
        self.gen.set_state(mine["torch"].cpu())

    def _data(self) -> tuple[CropCache, CropCache]:
        opts = self.opts
        paths = list_images(opts.data)
        if opts.val is not None:
            train_paths, val_paths = paths, list_images(opts.val)
        else:
            train_paths, val_paths = split_holdout(paths)
        if not val_paths:
            raise BadInputError(f"{opts.data}: too few photos to hold out a validation set; pass --val DIR")
        return CropCache(train_paths, opts.crop, self.world.device), CropCache(val_paths, opts.crop, self.world.device)

    def train_step(self) -> float:
        """One optimiser step on this rank's crops with the ranks' mean gradient; returns the mean loss."""
        opts, model = self.opts, self.model
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, opts.steps, opts.lr, opts.warmup)
        batch = self.train_data.sample(opts.batch // self.world.size, self.rng)
        cuda = self.world.device.type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = model.nelbo_terms(batch, generator=self.gen)["bpd"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(model, self.world)
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip)
        self.opt.step()
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - opts.ema)  # ema <- ema + (1 - decay) (w - ema)
        self.step += 1
        value = distributed.mean(loss.item(), self.world)
        self.run_bpd = value if math.isnan(self.run_bpd) else 0.99 * self.run_bpd + 0.01 * value
        return value

    def save(self) -> None:
        """Checkpoint (every rank's random streams included) and the EMA model file, atomically (main rank)."""
        states = distributed.gather({"numpy": self.rng.bit_generator.state, "torch": self.gen.get_state()}, self.world)
        if self.world.is_main:
            save_atomic({"config": self.model.config.to_dict(), "model": self.model.state_dict(),
                         "ema": self.ema.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                         "run_bpd": self.run_bpd, "rng": states, "segments": self.segments}, self.ckpt_path)
            export_weights(self.ema, self.opts.out / WEIGHTS_FILE)

    def should_stop(self, start_step: int, t0: float) -> bool:
        """Rank 0 decides (step count or wall time), every rank follows."""
        opts = self.opts
        stop = self.step >= opts.steps
        stop |= opts.stop_after is not None and self.step - start_step >= opts.stop_after
        stop |= opts.minutes is not None and time.time() - t0 >= opts.minutes * 60
        return distributed.from_main(stop, self.world)


def train(opts: TrainOptions, report: Callable[[Status], None] | None = None,
          log: Callable[[str], None] | None = None) -> Summary:
    """Train (or resume) a model into opts.out: checkpoint.pt, model.pt (EMA weights) and train_log.txt.

    Under torchrun every process calls this; rank 0 alone writes files and reports."""
    world = distributed.start(opts.device)
    try:
        return _train(opts, world, report, log)
    finally:
        distributed.stop()


def _train(opts: TrainOptions, world: distributed.World, report: Callable[[Status], None] | None,
           log: Callable[[str], None] | None) -> Summary:
    if world.is_main:
        opts.out.mkdir(parents=True, exist_ok=True)
    run = _Run(opts, world)
    log_file = opts.out / LOG_FILE

    def note(line: str) -> None:
        if world.is_main:
            with log_file.open("a") as f:
                f.write(line + "\n")
            if log:
                log(line)

    n_params = sum(p.numel() for p in run.model.parameters())
    start_step, t0, val_bpd = run.step, time.time(), None
    skipped = run.train_data.skipped + run.val_data.skipped
    skip_text = f" (smaller than the crop, skipped: {run.train_data.skipped} train, {run.val_data.skipped} val)"
    note(f"{'resumed at step ' + str(run.step) if opts.resume else 'new run'}: {n_params / 1e6:.2f} M parameters, "
         f"T={run.model.steps}, {len(run.train_data.images)} train / {len(run.val_data.images)} val photos"
         f"{skip_text if skipped else ''}, {hardware(world)}; "
         + " ".join(f"{k}={v}" for k, v in asdict(opts).items()))
    if world.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    while not run.should_stop(start_step, t0):
        run.train_step()
        speed = (run.step - start_step) * opts.batch / (time.time() - t0)
        if opts.eval_every and run.step % opts.eval_every == 0 and world.is_main:
            val_bpd = evaluate(run.ema, run.val_data, opts.eval_batches, opts.batch)
            note(f"step {run.step} val_bpd {val_bpd:.4f} (EMA)")
        if run.step % opts.log_every == 0:
            note(f"step {run.step} bpd {run.run_bpd:.4f} gamma_min {run.model.schedule.gamma_min.item():.4f} "
                 f"lr {run.opt.param_groups[0]['lr']:.2e} {speed:.1f} crops/s {time.time() - t0:.0f} s")
        if run.step % opts.save_every == 0:
            run.save()
        if report and world.is_main:
            report(Status(run.step, opts.steps, run.run_bpd, run.opt.param_groups[0]["lr"], speed, val_bpd))
    seconds = time.time() - t0
    run.segments.append({"hardware": hardware(world), "from_step": start_step, "to_step": run.step,
                         "seconds": seconds})
    run.save()
    fingerprint = distributed.check_agreement(run.model, world)
    if world.is_main:
        val_bpd = evaluate(run.ema, run.val_data, opts.eval_batches, opts.batch)
        note(f"stopped at step {run.step} after {seconds:.0f} s: train bpd {run.run_bpd:.4f}, val bpd {val_bpd:.4f} "
             f"(EMA), {world.size} rank(s) agree on weights {fingerprint}")
    distributed.barrier(world)  # rank 0 evaluated alone: leave together, or gloo may abort the rank that left first
    return Summary(run.step, run.run_bpd, val_bpd, n_params, len(run.train_data.images), len(run.val_data.images),
                   run.model.config, run.segments)
