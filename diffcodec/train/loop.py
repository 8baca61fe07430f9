"""The training loop: AdamW, warm-up + cosine, gradient clipping, EMA, atomic checkpoints, resume."""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..uqdm import UQDM, ModelConfig
from ..nn import UNetConfig
from .data import CropCache, list_images, split_holdout


HALF_MIN_NUMEL = 4096  # tensors at least this large are stored as float16


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


@torch.no_grad()
def evaluate(model: UQDM, cache: CropCache, batches: int, batch: int, seed: int = 0) -> float:
    """Mean NELBO (bits/dim) over fixed random crops of the validation set."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=cache.device).manual_seed(seed)
    vals = [model.nelbo_terms(cache.sample(batch, rng), generator=gen)["bpd"].item() for _ in range(batches)]
    return float(np.mean(vals))


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of `base`."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Train a diffcodec UQDM model on random crops of a folder of photos.")
    ap.add_argument("data")
    ap.add_argument("--out", required=True, help="folder for checkpoint.pt and model.pt")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--minutes", type=float, default=1e9, help="stop after this wall time")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--channels", default="64,96,160,256")
    ap.add_argument("--blocks", default="2,2,2,2")
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--gamma-min", type=float, default=-12.0, help="initial gamma(0) (learned)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--save-every", type=float, default=120.0, help="seconds between checkpoints")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (optimiser included)")
    ap.add_argument("--init", help="start from the weights of a model file (e.g. weights/default/model.pt)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    train_paths, val_paths = split_holdout(list_images(args.data))
    train = CropCache(train_paths, args.crop, dev)
    val = CropCache(val_paths, args.crop, dev)
    print(f"train {len(train.images)} images, val {len(val.images)} images, device {dev}", flush=True)

    init = None
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        config = ModelConfig.from_dict(ck["config"])
    elif args.init:
        ck, init = None, torch.load(args.init, map_location=dev, weights_only=True)
        config = ModelConfig.from_dict(init["config"])
    else:
        ck = None
        config = ModelConfig(
            unet=UNetConfig(channels=tuple(int(c) for c in args.channels.split(",")),
                            blocks=tuple(int(b) for b in args.blocks.split(","))),
            steps=args.T,
            gamma_min=args.gamma_min,
        )
    model = UQDM(config).to(dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step, rng = 0, np.random.default_rng(1234)
    if ck is not None:
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        rng.bit_generator.state = ck["rng"]
        print(f"resumed at step {step}", flush=True)
    elif init is not None:
        model.load_state_dict({k: v.float() for k, v in init["state_dict"].items()})
        ema.load_state_dict(model.state_dict())
        print(f"initialised from {args.init}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters, T={config.steps}", flush=True)

    t0, last_save, run_bpd, step0 = time.time(), time.time(), None, step
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    while step < args.steps and (time.time() - t0) < args.minutes * 60:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        batch = train.sample(args.batch, rng)
        with amp:
            loss = model.nelbo_terms(batch)["bpd"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - args.ema)
        step += 1
        run_bpd = loss.item() if run_bpd is None else 0.99 * run_bpd + 0.01 * loss.item()
        if step % 200 == 0:
            el = time.time() - t0
            print(f"step {step} bpd {run_bpd:.4f} gamma_min {model.schedule.gamma_min.item():.3f} "
                  f"{(step - step0) * args.batch / el:.1f} crops/s {el:.0f}s", flush=True)
        if time.time() - last_save > args.save_every or step == args.steps:
            last_save = time.time()
            save_atomic({"config": config.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
                         "opt": opt.state_dict(), "step": step, "rng": rng.bit_generator.state}, ckpt_path)
            export_weights(ema, out / "model.pt")
    save_atomic({"config": config.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
                 "opt": opt.state_dict(), "step": step, "rng": rng.bit_generator.state}, ckpt_path)
    export_weights(ema, out / "model.pt")
    vb = evaluate(ema, val, batches=8, batch=args.batch)
    print(json.dumps({"step": step, "val_bpd": vb, "train_bpd": run_bpd, "seconds": time.time() - t0}), flush=True)


if __name__ == "__main__":
    main()
