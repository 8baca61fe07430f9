"""Training throughput: crops per second of one optimiser step (NELBO forward, backward, AdamW, EMA).

    python bench/train_speed.py [--config default] [--crop 64] [--batch 16] [--steps 10] [--threads 2] [--profile]

Random uint8 crops (throughput does not depend on the pixels); the first 2 steps are warm-up and not timed.
`--profile` prints the operators that take the most time.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from diffcodec.train.configs import load_config
from diffcodec.uqdm import UQDM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="default")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UQDM(load_config(args.config))
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    crops = torch.randint(0, 256, (args.batch, 3, args.crop, args.crop), dtype=torch.uint8)

    def step() -> None:
        loss = model.nelbo_terms(crops)["bpd"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1e-3)

    for _ in range(2):
        step()
    t = time.perf_counter()
    if args.profile:
        with torch.profiler.profile() as prof:
            for _ in range(args.steps):
                step()
    else:
        for _ in range(args.steps):
            step()
    seconds = time.perf_counter() - t
    n = sum(p.numel() for p in model.parameters())
    print(f"config {args.config} ({n / 1e6:.2f} M parameters), crop {args.crop}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads: {args.steps * args.batch / seconds:.1f} crops/s "
          f"({seconds / args.steps:.3f} s per step)")
    if args.profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
