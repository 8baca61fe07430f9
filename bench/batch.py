"""Would a batch of images share one network call per step and keep every file exact? Batched against one-by-one
network calls of the model: are the outputs bit-identical, and the seconds per image.

    PYTHONPATH=. python bench/batch.py --sizes 512x768 64x64 37x53 --batch 2

A file must decode alone (batch 1), so a batched encoder is only correct where the batched call gives each
image the bits of its own call. Writes bench/results/batch_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from diffcodec import rng
from diffcodec.codec import resolve_device
from diffcodec.determinism import one_thread
from diffcodec.zoo import load_model


def _seconds(call, repeats: int) -> float:
    """Best wall time of `repeats` calls."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    return best


def measure(model: str, device: str, height: int, width: int, batch: int, repeats: int) -> dict:
    """Batched vs one-by-one `predict` at one step on shared-seed noise of one size."""
    net = load_model(model, device).model
    gamma = net.gammas().detach()[1]
    z = torch.cat([rng.normal(seed, rng.TOP_NOISE, 0, (1, 3, height, width), device) for seed in range(batch)])
    with torch.no_grad(), one_thread():
        together = net.predict(z, gamma)
        alone = [net.predict(z[b : b + 1], gamma) for b in range(batch)]
        batched = _seconds(lambda: net.predict(z, gamma), repeats)
        single = _seconds(lambda: [net.predict(z[b : b + 1], gamma) for b in range(batch)], repeats)
    exact = all(torch.equal(t[b : b + 1], a[i]) for b, a in enumerate(alone) for i, t in enumerate(together))
    worst = max(float((t[b : b + 1] - a[i]).abs().max()) for b, a in enumerate(alone) for i, t in enumerate(together))
    return {"height": height, "width": width, "batch": batch, "bit_identical": exact, "max_abs_diff": worst,
            "seconds_per_image": {"batched": batched / batch, "alone": single / batch}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--sizes", nargs="+", default=["512x768", "64x64", "37x53"], help="HxW of each test")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/batch_<device>.json)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    for size in args.sizes:
        height, width = (int(v) for v in size.split("x"))
        row = measure(args.model, device, height, width, args.batch, args.repeats)
        rows.append(row)
        s = row["seconds_per_image"]
        print(f"{width} x {height}, batch {args.batch}: bit-identical {row['bit_identical']} (max |diff| "
              f"{row['max_abs_diff']:.2e}), {s['batched']:.3f} s per image batched, {s['alone']:.3f} s alone")
    out = args.out or Path(__file__).parent / "results" / f"batch_{device}.json"
    out.write_text(json.dumps({"device": device, "model": args.model, "threads": 1, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
