"""The model card written next to a trained model: data, steps, wall time, hardware, parameters, rates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..codec import encode_report
from ..zoo import WEIGHTS_FILE, weights_hash
from .data import list_images
from .loop import Summary, TrainOptions

CARD_FILE = "README.md"


def measure_ladder(folder: Path, model: Path) -> dict:
    """Encode every photo of `folder` with `model` (seed 0) and average each rung's bpp and PSNR (denoise) and
    the lossless bits per sub-pixel, from the real file bytes."""
    paths = list_images(folder)
    rows, pixels = [], []
    for path in paths:
        rows.append(encode_report(path, model=model, seed=0))
        with Image.open(path) as im:
            pixels.append(im.width * im.height)
    return {
        "folder": str(folder),
        "images": len(rows),
        "lossless_bpsp": float(np.mean([r.rungs[-1].bpp / 3 for r in rows])),
        "nelbo_bpsp": float(np.mean([r.nelbo_bits / (3 * n) for r, n in zip(rows, pixels)])),
        "encode_s": float(np.mean([r.seconds["total"] for r in rows])),
        "rungs": [{"rung": k, "bpp": float(np.mean([r.rungs[k].bpp for r in rows])),
                   "psnr": float(np.mean([r.rungs[k].psnr for r in rows]))} for k in range(len(rows[0].rungs))],
    }


def _table(ladder: dict) -> list[str]:
    rungs = ladder["rungs"]
    last = len(rungs) - 1
    head = "| rung | " + " | ".join(f"{r['rung']}" + (" (lossless)" if r["rung"] == last else "") for r in rungs) + " |"
    return [
        head,
        "|---" * (len(rungs) + 1) + "|",
        "| bpp | " + " | ".join(f"{r['bpp']:.3f}" for r in rungs) + " |",
        "| PSNR (dB) | " + " | ".join("inf" if r["rung"] == last else f"{r['psnr']:.2f}" for r in rungs) + " |",
    ]


def write_card(opts: TrainOptions, summary: Summary, command: str, ladder: dict | None = None) -> Path:
    """Write OUT/README.md describing the model in OUT/model.pt (and OUT/ladder.json when measured)."""
    model_file = opts.out / WEIGHTS_FILE
    config = summary.config
    seconds = sum(s["seconds"] for s in summary.segments)
    val_source = str(opts.val) if opts.val else f"1 in 25 photos of {opts.data} held out by a hash of the file name"
    lines = [
        f"# Model card: `{opts.out.name}`",
        "",
        "| | |",
        "|---|---|",
        f"| weights | `{WEIGHTS_FILE}` (sha256 prefix `{weights_hash(model_file).hex()}`, the id written into every "
        "file header) |",
        f"| architecture | UQDM, T = {config.steps} steps, gamma in [{config.gamma_min:.4f}, {config.gamma_max}] "
        f"(gamma_min learned); U-Net channels {'/'.join(map(str, config.unet.channels))}, blocks "
        f"{'/'.join(map(str, config.unet.blocks))}, embedding {config.unet.emb_dim} |",
        f"| parameters | {summary.parameters / 1e6:.2f} M |",
        f"| data | `{opts.data}`: {summary.n_train} photos for training; validation: {val_source} "
        f"({summary.n_val} photos) |",
        f"| training | {summary.step} steps of {opts.batch} random {opts.crop} x {opts.crop} crops with horizontal "
        f"flips, AdamW lr {opts.lr:g} ({opts.warmup} warm-up steps, cosine to 10%), weight decay "
        f"{opts.weight_decay:g}, gradient clipping {opts.clip:g}, EMA {opts.ema:g} |",
        f"| wall time | {seconds / 60:.1f} min in {len(summary.segments)} run(s) |",
        f"| final NELBO | train {summary.train_bpd:.4f} bits/dim (running mean), validation "
        f"{summary.val_bpd:.4f} bits/dim (EMA weights, {opts.eval_batches} batches of {opts.crop} x {opts.crop} "
        "crops) |",
        "",
        "Runs:",
        "",
        *[f"- steps {s['from_step']} to {s['to_step']} on {s['hardware']}, {s['seconds'] / 60:.1f} min"
          for s in summary.segments],
        "",
        f"Command of the last run: `{command}`",
    ]
    if ladder is not None:
        (opts.out / "ladder.json").write_text(json.dumps(ladder, indent=1))
        lines += [
            "",
            f"## Rates on {ladder['folder']} ({ladder['images']} photos, real file bytes, `denoise`, seed 0)",
            "",
            *_table(ladder),
            "",
            f"Lossless: {ladder['lossless_bpsp']:.3f} bits per sub-pixel (NELBO {ladder['nelbo_bpsp']:.3f}); "
            f"encode {ladder['encode_s']:.1f} s per photo on the training machine.",
        ]
    path = opts.out / CARD_FILE
    path.write_text("\n".join(lines) + "\n")
    return path
