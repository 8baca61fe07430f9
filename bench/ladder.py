"""Measure the ladder of the default model on a folder of images (real file bytes).

    python bench/ladder.py ../shared/data/kodak [--model default] [--out bench/results/kodak_ladder.json]

Per image: encode, then decode every rung (denoise) in a fresh decoder, check the last rung is exact,
and record bytes, bpp and PSNR per rung, encode / decode seconds and file bits over information content.
Prints the mean over images and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import diffcodec
from roundtrip import timed_round_trip
from diffcodec.image import load_image
from diffcodec.train.data import list_images
from diffcodec.zoo import load_model


def measure(path: Path, model: str) -> dict:
    pixels = load_image(path).pixels
    result, rungs, t_enc, t_dec = timed_round_trip(path, pixels, model, str(path))
    h, w = pixels.shape[:2]
    return {
        "image": path.name,
        "bytes": len(result.data),
        "lossless_bpsp": len(result.data) * 8 / (3 * h * w),
        "file_bits_over_ideal": len(result.data) * 8 / result.ideal_bits,
        "nelbo_bpsp": result.nelbo_bits / (3 * h * w),
        "encode_s": t_enc,
        "decode_s": t_dec,
        "seconds": result.seconds,
        "rungs": [{"rung": r.rung, "cum_bytes": r.cum_bytes, "bpp": r.bpp, "psnr": diffcodec.psnr(r.pixels, pixels)}
                  for r in rungs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    args = ap.parse_args()
    paths = list_images(args.folder)[: args.limit or None]
    loaded = load_model(args.model)
    rows = []
    for p in paths:
        rows.append(measure(p, args.model))
        r = rows[-1]
        print(f"{p.name}: {r['lossless_bpsp']:.3f} bpsp lossless, enc {r['encode_s']:.1f} s, dec {r['decode_s']:.1f} s, "
              + " ".join(f"{x['bpp']:.3f}/{x['psnr']:.2f}" for x in r["rungs"][:-1]), flush=True)
    n_rungs = len(rows[0]["rungs"])
    mean = {
        "lossless_bpsp": float(np.mean([r["lossless_bpsp"] for r in rows])),
        "nelbo_bpsp": float(np.mean([r["nelbo_bpsp"] for r in rows])),
        "file_bits_over_ideal": float(np.sum([r["bytes"] * 8 for r in rows]) / np.sum([r["bytes"] * 8 / r["file_bits_over_ideal"] for r in rows])),
        "encode_s": float(np.mean([r["encode_s"] for r in rows])),
        "decode_s": float(np.mean([r["decode_s"] for r in rows])),
        "rungs": [{"rung": k, "bpp": float(np.mean([r["rungs"][k]["bpp"] for r in rows])),
                   "psnr": float(np.mean([r["rungs"][k]["psnr"] for r in rows]))} for k in range(n_rungs)],
    }
    print(f"mean over {len(rows)} images: lossless {mean['lossless_bpsp']:.3f} bpsp (NELBO {mean['nelbo_bpsp']:.3f}), "
          f"file bits / information content {mean['file_bits_over_ideal']:.5f}, "
          f"encode {mean['encode_s']:.1f} s, decode {mean['decode_s']:.1f} s")
    for r in mean["rungs"]:
        print(f"  rung {r['rung']:2d}: {r['bpp']:7.3f} bpp  {r['psnr']:6.2f} dB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"model": loaded.name, "weights_hash": loaded.weights_hash.hex(), "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                "folder": str(args.folder)}
        args.out.write_text(json.dumps({"meta": meta, "mean": mean, "images": rows}, indent=1))


if __name__ == "__main__":
    main()
