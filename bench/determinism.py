"""Does a decoder with another torch thread count decode what the encoder coded? Real crops, real model.

    python bench/determinism.py ../shared/data/kodak --crop 128 --limit 4 [--encode-threads 1]
        [--decode-threads 2] [--model default] [--out bench/results/determinism.json]

Each crop (the centre crop of each image) is encoded in one process with --encode-threads torch threads
and decoded, every rung, in another process with --decode-threads. Per crop it records the first rung
whose reconstruction check failed (None when every rung matched) and whether the last rung is exact.
A failed check is the codec refusing a mismatched decoder; a rung that passed its check but differs from
the encoder's pixels would be a wrong image, and is counted separately (it must stay 0).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import diffcodec
from diffcodec.bitstream import read_stream, rung_check
from diffcodec.errors import BitstreamError
from diffcodec.image import load_image
from diffcodec.train.data import list_images


def centre_crop(path: Path, size: int) -> np.ndarray:
    pixels = load_image(path).pixels
    h, w = pixels.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return np.ascontiguousarray(pixels[top : top + size, left : left + size])


def worker(role: str, threads: int, model: str, stream: Path, crop: Path) -> None:
    """encode: crop.npy -> stream; decode: stream -> crop.npy.json (first failing rung, rungs shown)."""
    torch.set_num_threads(threads)
    if role == "encode":
        stream.write_bytes(diffcodec.encode(np.load(crop), model=model, seed=0))
        return
    shown, failed = [], None
    try:
        for r in diffcodec.iter_rungs(stream.read_bytes(), model=model):
            shown.append(r.pixels)
    except BitstreamError as e:
        failed = str(e)
    np.save(crop.with_suffix(".decoded.npy"), np.array(shown, dtype=np.uint8))
    crop.with_suffix(".json").write_text(json.dumps({"failed": failed}))


def measure(pixels: np.ndarray, args: argparse.Namespace, tmp: Path) -> dict:
    crop, stream = tmp / "crop.npy", tmp / "crop.dcz"
    np.save(crop, pixels)
    for role, threads in (("encode", args.encode_threads), ("decode", args.decode_threads)):
        subprocess.run([sys.executable, __file__, "--worker", role, str(threads), args.model, str(stream), str(crop)],
                       check=True)
    failed = json.loads(crop.with_suffix(".json").read_text())["failed"]
    shown = np.load(crop.with_suffix(".decoded.npy"))
    s = read_stream(stream.read_bytes())
    checks = [s.header.check] + [c.check for c in s.chunks]
    wrong = sum(rung_check(p.tobytes()) != c for p, c in zip(shown, checks))  # shown yet not the encoder's
    return {
        "rungs_total": len(checks),
        "rungs_verified": len(shown),
        "first_failed_rung": None if failed is None else len(shown),
        "error": failed,
        "wrong_images_shown": int(wrong),
        "last_rung_exact": len(shown) == len(checks) and bool(np.array_equal(shown[-1], pixels)),
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        role, threads, model, stream, crop = sys.argv[2:7]
        worker(role, int(threads), model, Path(stream), Path(crop))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--model", default="default")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--limit", type=int, default=4, help="only the first N images")
    ap.add_argument("--encode-threads", type=int, default=1)
    ap.add_argument("--decode-threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in list_images(args.folder)[: args.limit or None]:
            row = {"image": path.name, **measure(centre_crop(path, args.crop), args, Path(tmp))}
            print(json.dumps(row), flush=True)
            rows.append(row)
    mismatched = sum(r["first_failed_rung"] is not None for r in rows)
    wrong = sum(r["wrong_images_shown"] for r in rows)
    print(f"{len(rows)} crops of {args.crop} px, encode {args.encode_threads} thread(s), decode "
          f"{args.decode_threads}: {len(rows) - mismatched} decoded every rung, {mismatched} refused at a "
          f"reconstruction check, {wrong} wrong images shown")
    if args.out:
        args.out.write_text(json.dumps({"torch": torch.__version__, "machine": platform.machine(),
                                        "args": {k: str(v) for k, v in vars(args).items()}, "crops": rows},
                                       indent=1))


if __name__ == "__main__":
    main()
