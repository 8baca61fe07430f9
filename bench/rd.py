"""The rate-distortion benchmark: diffcodec's rungs (ONE file per image) against the codecs people use.

    python bench/rd.py ../shared/data/kodak --out bench/results/kodak

For each image: diffcodec encoded once (seed 0) and decoded rung by rung with denoise, unrefined, flow, ancestral
and ensemble (or the reconstructions named by --recon);
JPEG, WebP, AVIF, JPEG XL and rate-targeted JPEG 2000 at a sweep of settings; ONE JPEG 2000 file with
quality layers cut layer by layer; PNG, WebP, JPEG 2000 and JPEG XL lossless. Bytes are real file bytes,
PSNR (RGB) and MS-SSIM are measured on the decoded pixels. Writes results.json, results.csv, rd_psnr.png,
rd_msssim.png and contact_sheet.png to --out, and prints PSNR at 0.25 / 0.5 / 1 / 2 bpp, lossless bits per
sub-pixel and BD-rate / BD-PSNR of diffcodec against each baseline. Each image is cached under --out/cache,
so an interrupted run resumes. Kodak takes about 4 to 5 minutes per image on one thread of a shared
2-core machine, 1.5 to 2 hours for 24 images (the first image prints the estimate for the rest); with
--recon denoise --recon unrefined about a quarter of that.
Needs the bench extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from rdbench.run import run

from diffcodec.codec import RECONS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, help="folder of images (PNG, ...)")
    ap.add_argument("--out", type=Path, help="output folder (default: bench/results/<folder name>)")
    ap.add_argument("--model", default="default", help="model name or path (default: default)")
    ap.add_argument("--seed", type=int, default=0, help="the diffcodec seed of every image (default: 0)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (default: all)")
    ap.add_argument("--sheet", help="image name for the contact sheet (default: kodim23.png if present, else the first)")
    ap.add_argument("--recon", action="append", choices=RECONS, help="a reconstruction to measure the rungs with; "
                    "repeat it for more (default: all of them; the first gives the lossless point)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; results do not depend on it)")
    args = ap.parse_args()
    if not args.folder.is_dir():
        ap.error(f"{args.folder} is not a folder")
    torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).resolve().parent / "results" / args.folder.name
    run(args.folder, out, args.model, args.seed, args.limit, args.sheet, recons=tuple(args.recon or RECONS))


if __name__ == "__main__":
    main()
