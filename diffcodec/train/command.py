"""`diffcodec train`: the command-line face of train.loop, with a progress bar and the model card."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, TypeVar

import torch
import typer
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from ..errors import BadInputError
from .card import measure_ladder, write_card
from .configs import PRESETS
from .loop import Status, TrainOptions, train

S = TypeVar("S")


def train_command(
    data: Path = typer.Argument(..., help="folder of training photos (JPEG/PNG/..., any size; not recursive)"),
    out: Path = typer.Option(..., "--out", help="model folder, e.g. weights/NAME: gets model.pt, checkpoint.pt, "
                             "train_log.txt and README.md (the model card)"),
    config: str = typer.Option("default", "--config", help=f"model preset ({', '.join(PRESETS)}) or a JSON file"),
    steps: int = typer.Option(100_000, "--steps", min=1, help="total optimiser steps (the cosine schedule ends here)"),
    batch: int = typer.Option(32, "--batch", min=1, help="crops per step, over all processes"),
    crop: int = typer.Option(128, "--crop", min=16, help="crop side in pixels (smaller photos are skipped)"),
    lr: float = typer.Option(3e-4, "--lr", min=0.0, help="peak AdamW learning rate"),
    warmup: int = typer.Option(500, "--warmup", min=0, help="linear warm-up steps"),
    ema: float = typer.Option(0.999, "--ema", min=0.0, max=1.0, help="EMA decay of the exported weights"),
    gamma_min: Optional[float] = typer.Option(None, "--gamma-min", help="initial gamma(0) of a new model "
                                              "(default: the config's)"),
    fixed_gamma: bool = typer.Option(False, "--fixed-gamma", help="keep gamma_min (and so every gamma of the grid) "
                                     "as it is: for fine-tuning with --init, since the network knows only the "
                                     "gammas it was trained on"),
    val: Optional[Path] = typer.Option(None, "--val", help="validation folder (default: 1 in 25 photos of DATA)"),
    eval_every: int = typer.Option(1000, "--eval-every", min=0, help="steps between validation NELBOs (0: only at "
                                   "the end)"),
    eval_batches: int = typer.Option(8, "--eval-batches", min=1, help="validation batches (fixed crops and noise)"),
    save_every: int = typer.Option(500, "--save-every", min=1, help="steps between checkpoints"),
    log_every: int = typer.Option(100, "--log-every", min=1, help="steps between log lines"),
    minutes: Optional[float] = typer.Option(None, "--minutes", min=0.0, help="stop, with a checkpoint, after this "
                                            "wall time"),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", min=1, help="stop, with a checkpoint, after this "
                                             "many steps of this run (resume later with --resume)"),
    resume: bool = typer.Option(False, "--resume", help="continue exactly from OUT/checkpoint.pt"),
    init: Optional[str] = typer.Option(None, "--init", help="start from the weights of a model (name or file)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the initial weights, crops and noise"),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda"),
    measure: Optional[Path] = typer.Option(None, "--measure", help="after training, code every photo of this "
                                           "folder (e.g. Kodak) and put the rung table in the model card"),
    force: bool = typer.Option(False, "--force", "-f", help="start over even if OUT already holds a model"),
) -> None:
    """Train a UQDM model on random crops of DATA. Resumable, and data-parallel under torchrun:
    `torchrun --nproc_per_node N -m diffcodec train DATA --out DIR` (gloo on CPU, nccl on CUDA)."""
    for folder, flag in ((data, "DATA"), (val, "--val"), (measure, "--measure")):
        if folder is not None and not folder.is_dir():
            raise BadInputError(f"{flag} {folder}: not a directory")
    if threads:
        torch.set_num_threads(threads)
    opts = TrainOptions(data=data, out=out, config=config, steps=steps, batch=batch, crop=crop, lr=lr, warmup=warmup,
                        ema=ema, gamma_min=gamma_min, fixed_gamma=fixed_gamma, val=val, eval_every=eval_every, eval_batches=eval_batches, save_every=save_every,
                        log_every=log_every, minutes=minutes, stop_after=stop_after, resume=resume, init=init,
                        seed=seed, device=device, force=force)
    main = int(os.environ.get("RANK", "0")) == 0
    console = Console(stderr=True)
    with _bar(console, main and console.is_terminal) as (bar, task):
        def report(s: Status) -> None:
            val_text = "-" if s.val_bpd is None else f"{s.val_bpd:.3f}"
            bar.update(task, completed=s.step, total=s.steps,
                       stats=f"bpd {s.bpd:.3f} val {val_text} lr {s.lr:.1e} {s.crops_per_s:.0f} crops/s")

        summary = train(opts, report if bar else None, log=(bar.console.print if bar else print) if main else None)
    if not main:
        return
    ladder = None
    if measure is not None:
        print(f"measuring the rungs on {measure} ...", flush=True)
        ladder = measure_ladder(measure, out / "model.pt")
    command = shlex.join(["diffcodec", "train", *sys.argv[2:]])
    card = write_card(opts, summary, command, ladder)
    print(f"{out / 'model.pt'}: step {summary.step} of {steps}, validation {summary.val_bpd:.4f} bits/dim; "
          f"model card {card}")


@contextmanager
def _bar(console: Console, enabled: bool) -> Iterator[tuple[Progress | None, TaskID | None]]:
    """A progress bar with a free-text stats column on a terminal, or (None, None)."""
    if not enabled:
        yield None, None
        return
    with Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
        yield bar, bar.add_task("training", total=None, stats="")


def _check_context_inputs(data: Path, val: Path | None, init: Path | None, crop: int | None, threads: int) -> None:
    """The checks a context fit makes before any work (BadInputError), then the torch thread count (crop None: any
    crop side will do)."""
    for folder, flag in ((data, "DATA"), (val, "--val")):
        if folder is not None and not folder.is_dir():
            raise BadInputError(f"{flag} {folder}: not a directory")
    if init is not None and not init.is_file():
        raise BadInputError(f"--init {init}: no such file")
    if crop is not None and crop % 2:
        raise BadInputError(f"--crop must be even (the groups tile 2 x 2 blocks), got {crop}")
    if threads:
        torch.set_num_threads(threads)


def _fit_with_bar(fit: Callable[..., S], opts: object, stats: Callable[[float], str]) -> S:
    """fit(opts, log=..., report=...) under a progress bar on a terminal (`stats` shows the running loss)."""
    console = Console(stderr=True)
    with _bar(console, console.is_terminal) as (bar, task):
        def report(done: int, total: int, bits: float) -> None:
            bar.update(task, completed=done, total=total, stats=stats(bits))

        return fit(opts, log=bar.console.print if bar else print, report=report if bar else None)


def train_context_command(
    data: Path = typer.Argument(..., help="folder of training photos (1 in 25 is held out to measure the bits)"),
    model: str = typer.Option("default", "--model", "-m", help="the model (name or folder) whose pixels to model; "
                              "it stays frozen"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="T, where the chain ends before the pixels "
                                        "(default: the model's codec.json); files with other T code without it"),
    iters: int = typer.Option(3000, "--iters", min=1, help="optimiser steps"),
    batch: int = typer.Option(16, "--batch", min=1, help="crops per step"),
    crop: int = typer.Option(64, "--crop", min=8, help="crop side in pixels (even)"),
    pool: int = typer.Option(3072, "--pool", min=1, help="training crops taken down the chain once, then resampled"),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="peak Adam learning rate (cosine to a tenth)"),
    width: int = typer.Option(32, "--width", min=1, help="channels of the context network"),
    blocks: int = typer.Option(2, "--blocks", min=0, help="residual blocks of the context network"),
    eval_every: int = typer.Option(500, "--eval-every", min=1, help="steps between held-out measurements (and "
                                   "saves)"),
    out: Optional[Path] = typer.Option(None, "--out", help="context file to write (default: context.pt beside the "
                                       "model file, where the codec finds it)"),
    val: Optional[Path] = typer.Option(None, "--val", help="held-out photos (default: 1 in 25 photos of DATA)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the crops, the noise and the batches"),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)"),
    init: Optional[Path] = typer.Option(None, "--init", help="context file to start from (made for this model and "
                                        "T; its width and blocks are kept), e.g. to train a shipped one further"),
) -> None:
    """Fit the pixel context network of a trained model: the lossless chunk then codes the pixels in four
    checkerboard groups, each seeing the groups before it, and G given R, B given R and G in each pixel.
    Writes context.pt beside the model (the codec uses it for files of T steps); a refit keeps the context.pt it
    replaces as context.HASH.pt, so older files still decode in full."""
    from .context import ContextOptions, train_context

    _check_context_inputs(data, val, init, crop, threads)
    opts = ContextOptions(data=data, model=model, steps=steps, iters=iters, batch=batch, crop=crop, pool=pool, lr=lr,
                          width=width, blocks=blocks, eval_every=eval_every, seed=seed, out=out, val=val,
                          init=init)
    summary = _fit_with_bar(train_context, opts, lambda bits: f"pixel bits {bits:.3f}")
    print(f"{summary.path}: {summary.parameters} parameters, {summary.iters} steps in {summary.seconds / 60:.1f} min; "
          f"held-out pixel bits {summary.context_bits:.4f} per sub-pixel (factorised {summary.factorised_bits:.4f})")


def train_step_context_command(
    data: Path = typer.Argument(..., help="folder of training photos (1 in 25 is held out to measure the bits)"),
    model: str = typer.Option("default", "--model", "-m", help="the model (name or folder) whose steps to model; "
                              "it stays frozen"),
    step: Optional[list[int]] = typer.Option(None, "--step", min=1, help="a step to fit (1 is the first step, "
                                             "t_0 -> t_1); repeat it for more (default: every step of the model's "
                                             "codec.json)"),
    iters: int = typer.Option(3000, "--iters", min=1, help="optimiser steps per step network"),
    batch: int = typer.Option(16, "--batch", min=1, help="crops per optimiser step"),
    crop: int = typer.Option(64, "--crop", min=8, help="crop side in pixels (even)"),
    pool: int = typer.Option(2048, "--pool", min=1, help="training crops taken down the chain once per step, then "
                             "resampled"),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="peak Adam learning rate (cosine to a tenth)"),
    width: Optional[int] = typer.Option(None, "--width", min=1, help="channels of each step's context network "
                                        "(default: 16; with --init, that file's)"),
    blocks: Optional[int] = typer.Option(None, "--blocks", min=0, help="residual blocks of each step's context "
                                         "network (default: 2; with --init, that file's, and more than its own add "
                                         "blocks that start as the identity)"),
    eval_every: int = typer.Option(500, "--eval-every", min=1, help="optimiser steps between held-out measurements "
                                   "(and saves)"),
    out: Optional[Path] = typer.Option(None, "--out", help="step context file to write (default: step_context.pt "
                                       "beside the model file, where the codec finds it)"),
    val: Optional[Path] = typer.Option(None, "--val", help="held-out photos (default: 1 in 25 photos of DATA)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the crops, the noise and the batches"),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)"),
    init: Optional[Path] = typer.Option(None, "--init", help="step context file to start from (made for this model "
                                        "and holding these steps; its networks keep their width); the file written "
                                        "keeps its other steps as they are, each of which must read the same x_hat' "
                                        "under the model's refine.pt as it did"),
    refined: bool = typer.Option(True, "--refined/--unrefined", help="let each step's network read the post-filter's "
                                 "refined x_hat' and its prior mean where the model has one (refine.pt beside it; the "
                                 "file then names it, and needs it), or the U-Net's x_hat"),
) -> None:
    """Fit the step context networks of a trained model: each diffusion step's z_s is then sent in four
    checkerboard groups, each seeing the groups before it, and G given R, B given R and G in each pixel.
    Writes step_context.pt beside the model: the encoder then groups every step it has a network for. A file
    names the step context it used; a refit keeps the step_context.pt it replaces as step_context.HASH.pt, so
    older files still decode in full (without that file, up to their first grouped step)."""
    from .step_context import StepContextOptions, train_step_context

    _check_context_inputs(data, val, init, crop, threads)
    opts = StepContextOptions(data=data, model=model, steps=tuple(step or ()), iters=iters, batch=batch, crop=crop,
                              pool=pool, lr=lr, width=width, blocks=blocks, eval_every=eval_every, seed=seed, out=out,
                              val=val, init=init, refined=refined)
    summary = _fit_with_bar(train_step_context, opts, lambda bits: f"step bits {bits:.4f}")
    per_step = ", ".join(f"step {i}: {summary.context_bits[i]:.4f} (plain {summary.plain_bits[i]:.4f})"
                         for i in sorted(summary.context_bits))
    print(f"{summary.path}: {summary.parameters} parameters in {summary.seconds / 60:.1f} min; held-out bits per "
          f"sub-pixel {per_step}")


def train_refine_command(
    data: Path = typer.Argument(..., help="folder of training photos (1 in 25 is held out to measure the PSNR)"),
    model: str = typer.Option("default", "--model", "-m", help="the model (name or folder) whose rungs to refine; "
                              "it stays frozen"),
    rung: Optional[list[int]] = typer.Option(None, "--rung", min=1, help="a lossy rung to fit (1 is the rung after "
                                             "the first step); repeat it for more (default: every lossy rung of the "
                                             "model's codec.json)"),
    iters: int = typer.Option(6000, "--iters", min=1, help="optimiser steps per rung network"),
    batch: int = typer.Option(16, "--batch", min=1, help="crops per optimiser step"),
    crop: int = typer.Option(64, "--crop", min=8, help="crop side in pixels"),
    pool: int = typer.Option(2048, "--pool", min=1, help="training crops taken down the chain once per rung, then "
                             "resampled"),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, help="peak Adam learning rate (cosine to a tenth)"),
    width: Optional[int] = typer.Option(None, "--width", min=1, help="channels of each rung's network (default: 16; "
                                        "with --init, that file's)"),
    blocks: Optional[int] = typer.Option(None, "--blocks", min=0, help="residual blocks of each rung's network "
                                         "(default: 2; with --init, that file's, and more than its own add blocks "
                                         "that start as the identity)"),
    eval_every: int = typer.Option(500, "--eval-every", min=1, help="optimiser steps between held-out measurements "
                                   "(and saves)"),
    out: Optional[Path] = typer.Option(None, "--out", help="refine file to write (default: refine.pt beside the "
                                       "model file, where the decoder finds it)"),
    val: Optional[Path] = typer.Option(None, "--val", help="held-out photos (default: 1 in 25 photos of DATA)"),
    seed: int = typer.Option(0, "--seed", min=0, help="seed of the crops, the noise and the batches"),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)"),
    init: Optional[Path] = typer.Option(None, "--init", help="refine file to start from (made for this model and "
                                        "holding these rungs; its networks keep their width); the file written keeps "
                                        "its other rungs as they are"),
) -> None:
    """Fit the post-filter networks of a trained model: the decoder then shows each lossy rung as the U-Net's
    x_hat refined by that rung's small network (a higher PSNR at the same bytes). Writes refine.pt beside the
    model. Nothing is sent for it: files are the same with or without it, and every file decodes with either."""
    from .refine import RefineOptions, train_refine

    _check_context_inputs(data, val, init, None, threads)
    opts = RefineOptions(data=data, model=model, rungs=tuple(rung or ()), iters=iters, batch=batch, crop=crop,
                         pool=pool, lr=lr, width=width, blocks=blocks, eval_every=eval_every, seed=seed, out=out,
                         val=val, init=init)
    summary = _fit_with_bar(train_refine, opts, lambda db: f"batch PSNR {db:.2f} dB")
    per_rung = ", ".join(f"rung {k}: {summary.refined_psnr[k]:.3f} dB (x_hat {summary.plain_psnr[k]:.3f})"
                         for k in sorted(summary.refined_psnr))
    print(f"{summary.path}: {summary.parameters} parameters in {summary.seconds / 60:.1f} min; held-out PSNR {per_rung}")
