"""Compare the step coders on a few image crops: bits, KL, overhead and PSNR per rung, and timings.

    python bench/rec.py ../shared/data/kodak/kodim01.png ../shared/data/kodak/kodim15.png --crop 64 \
        [--config uq --config rec:uniform --config rec:gaussian --config hybrid:gaussian:4] [--out FILE.json]

A config is CODER[:POSTERIOR[:REC_STEPS]]. Per image and config: encode (1 thread), decode every rung in a
fresh decoder, check the last rung is exact, then print per rung the chunk's information content (bits), the
step's KL(q || p) in bits, the overhead bits - KL (per REC chunk where REC sent the step), bpp of the file cut
there and PSNR (denoise). Timings come from a machine shared with other jobs: they are noisy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import diffcodec
from roundtrip import timed_round_trip
from diffcodec.bitstream import CODER_REC, CODER_REC_POWER, read_stream
from diffcodec.image import load_image
from diffcodec.rec.coder import TARGET_BITS


def crop(path: Path, size: int) -> np.ndarray:
    """The centre size x size crop of an image (the whole image when size is 0)."""
    pixels = load_image(path).pixels
    if not size:
        return pixels
    h, w = pixels.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])


def parse_config(text: str) -> dict:
    parts = text.split(":")
    return {"coder": parts[0], "posterior": parts[1] if len(parts) > 1 else "uniform",
            "rec_steps": int(parts[2]) if len(parts) > 2 else None}


def measure(pixels: np.ndarray, config: dict, model: str, rec_bits: int) -> dict:
    result, rungs, t_enc, t_dec = timed_round_trip(pixels, pixels, model, str(config), rec_bits=rec_bits, **config)
    chunks = read_stream(result.data).chunks
    rows = []
    for r, d in zip(result.rungs, rungs):
        rec = 0 < r.rung <= len(chunks) - 1 and chunks[r.rung - 1].coder in (CODER_REC, CODER_REC_POWER)
        rows.append({"rung": r.rung, "coder": "rec" if rec else "uq", "bits": r.ideal_bits, "kl_bits": r.kl_bits,
                     "file_bits": 8 * r.bytes, "bpp": r.bpp, "psnr": diffcodec.psnr(d.pixels, pixels)})
    return {"config": config, "bpp": result.bpp, "encode_s": t_enc, "decode_s": t_dec, "seconds": result.seconds,
            "rungs": rows}


def show(name: str, m: dict) -> None:
    c = m["config"]
    print(f"\n{name} coder={c['coder']} posterior={c['posterior']} rec_steps={c['rec_steps']}: "
          f"{m['bpp']:.3f} bpp lossless, encode {m['encode_s']:.1f} s (rec {m['seconds']['rec']:.1f} s), "
          f"decode all rungs {m['decode_s']:.1f} s")
    print(f"{'rung':>4} {'coder':>5} {'bits':>9} {'kl_bits':>9} {'over%':>6} {'bpp':>8} {'psnr':>7}")
    for r in m["rungs"]:
        kl = r["kl_bits"]
        over = f"{100 * (r['bits'] - kl) / kl:6.1f}" if kl else f"{'':>6}"
        kl_text = f"{kl:9.0f}" if kl is not None else f"{'':>9}"
        print(f"{r['rung']:>4} {r['coder']:>5} {r['bits']:9.0f} {kl_text} {over} {r['bpp']:8.3f} {r['psnr']:7.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="+", type=Path)
    ap.add_argument("--crop", type=int, default=64, help="centre crop size (0: whole image)")
    ap.add_argument("--config", action="append", help="CODER[:POSTERIOR[:REC_STEPS]] (repeatable)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--rec-bits", type=int, default=TARGET_BITS, help="target KL per REC chunk")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    configs = [parse_config(c) for c in args.config or ["uq", "rec:uniform", "rec:gaussian"]]
    results = []
    for path in args.images:
        pixels = crop(path, args.crop)
        for config in configs:
            m = measure(pixels, config, args.model, args.rec_bits)
            show(f"{path.name} {pixels.shape[1]}x{pixels.shape[0]}", m)
            results.append({"image": path.name, "crop": args.crop, **m})
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
