"""Measure the ladder of the default model on a folder of images (real file bytes).

    python bench/ladder.py ../shared/data/kodak [--model default] [--out bench/results/kodak_ladder.json]
    python bench/ladder.py ../shared/data/train --held-out --anchor     # validation: the photos training held out

Per image: encode, then decode every rung (denoise) in a fresh decoder, check the last rung is exact,
and record bytes, bpp and PSNR per rung, encode / decode seconds and file bits over information content.
Prints the mean over images and writes everything as JSON.

`--held-out` measures only the photos `diffcodec train` holds out of that folder (1 in 25, by a hash of the file
name): the photos to choose a model or a fit on, where Kodak is for reporting. `--anchor` also codes each image
with rate-targeted JPEG 2000 (the rd bench's sweep) and prints the BD-PSNR and BD-rate of the mean ladder against
JPEG 2000's mean curve on the same images (needs the bench extra).
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
from diffcodec.train.data import list_images, split_holdout
from diffcodec.zoo import load_model


def anchor_points(pixels: np.ndarray) -> list[dict]:
    """Rate-targeted JPEG 2000 (the rd bench's settings) of one image: real bytes, bpp and PSNR per target."""
    from rdbench import baselines  # the bench extra: imagecodecs

    j2k = next(c for c in baselines.LOSSY if c.name == "JPEG 2000")
    h, w = pixels.shape[:2]
    return [{"setting": s, "bpp": len(data) * 8 / (h * w), "psnr": diffcodec.psnr(baselines.decode(data), pixels)}
            for s in j2k.settings for data in [j2k.encode(pixels, s)]]


def bd_against_anchor(rows: list[dict], mean_rungs: list[dict]) -> dict:
    """BD-PSNR (dB) and BD-rate (%) of the mean lossy ladder against the mean JPEG 2000 curve of the same images."""
    from rdbench.bd import bd_quality, bd_rate

    settings = [p["setting"] for p in rows[0]["anchor"]]
    anchor = [(float(np.mean([r["anchor"][k]["bpp"] for r in rows])), float(np.mean([r["anchor"][k]["psnr"] for r in rows])))
              for k in range(len(settings))]
    keep = [k for k, a in enumerate(anchor) if np.isfinite(a[1])]  # a setting some image decoded exactly: no mean PSNR
    settings, anchor = [settings[k] for k in keep], [anchor[k] for k in keep]
    lossy = mean_rungs[:-1]  # every lossy rung, as in the rd bench's curves (the last rung is exact)
    args = ([a[0] for a in anchor], [a[1] for a in anchor], [r["bpp"] for r in lossy], [r["psnr"] for r in lossy])
    gain, rate = bd_quality(*args), bd_rate(*args)
    return {"anchor": "JPEG 2000", "curve": [{"setting": s, "bpp": b, "psnr": q} for s, (b, q) in zip(settings, anchor)],
            "bd_psnr_db": gain and gain.value, "bd_rate_pct": rate and rate.value}


def measure(path: Path, model: str, anchor: bool) -> dict:
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
        **({"anchor": anchor_points(pixels)} if anchor else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    ap.add_argument("--held-out", action="store_true", help="only the photos `diffcodec train` holds out of the folder")
    ap.add_argument("--anchor", action="store_true", help="BD-PSNR and BD-rate against JPEG 2000 on the same images")
    args = ap.parse_args()
    paths = list_images(args.folder)
    paths = (split_holdout(paths)[1] if args.held_out else paths)[: args.limit or None]
    loaded = load_model(args.model)
    rows = []
    for p in paths:
        rows.append(measure(p, args.model, args.anchor))
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
    if args.anchor:
        mean["bd"] = bd_against_anchor(rows, mean["rungs"])
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        print(f"against JPEG 2000 on the same images: BD-PSNR {fmt(mean['bd']['bd_psnr_db'], '+.3f')} dB, "
              f"BD-rate {fmt(mean['bd']['bd_rate_pct'], '+.1f')}%")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {**loaded.identity(), "date": time.strftime("%Y-%m-%d"),
                "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                "folder": str(args.folder), "held_out": args.held_out}
        args.out.write_text(json.dumps({"meta": meta, "mean": mean, "images": rows}, indent=1))


if __name__ == "__main__":
    main()
