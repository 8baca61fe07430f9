"""Keep the first T of a model's trained times: the same weights, coding only the first T steps of its grid.

    python tools/regrid.py weights/default/model.pt --steps 6 --out /tmp/regrid/model.pt

The network only knows the gammas it was trained on (its Fourier embedding of gamma is sharp), so the new grid
is a prefix of the trained one: t_i = 1 - i / T' for i = 0..T (config grid_steps = T'). The chain then stops at z_T, and
p(x | z_T) codes the pixels from there; `diffcodec train --init OUT` fine-tunes the result.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from diffcodec.train.loop import export_weights
from diffcodec.zoo import load_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="a model file whose grid ends at t = 0")
    ap.add_argument("--steps", type=int, required=True, help="T: how many of its steps to keep")
    ap.add_argument("--out", type=Path, required=True, help="the new model file")
    args = ap.parse_args()
    model = load_file(args.model)
    trained = model.config.steps
    if model.config.grid_steps not in (None, trained) or not 1 <= args.steps <= trained:
        raise SystemExit(f"--steps must be in [1, {trained}] for a model trained to t = 0 with {trained} steps")
    model.config = replace(model.config, steps=args.steps, grid_steps=trained)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        export_weights(model, args.out)
    print(f"{args.out}: the first {args.steps} of {trained} steps")


if __name__ == "__main__":
    main()
