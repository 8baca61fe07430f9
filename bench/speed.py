"""Speed of the codec per image: seconds of network, REC search, tables and coder (encode and decode), symbols/s,
peak memory, and the encode again with the coding overlapped with the network (`overlap=True`: same bytes, checked).

    PYTHONPATH=. python bench/speed.py /work/shared/data/kodak --limit 3 --threads 1

Each image runs in a fresh process so that its peak RSS (ru_maxrss) is its own. Writes
bench/results/speed_<device>.json and prints one line per image and a summary.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from pathlib import Path

import numpy as np
import torch

from diffcodec.rec import native


def _one(args: tuple[str, str, str, int]) -> dict:
    """Encode and decode one image; the figures of `main`."""
    path, model, device, threads = args
    torch.set_num_threads(threads)
    from diffcodec import codec
    from diffcodec.image import load_image

    overlapped = codec.encode_report(path, model=model, seed=1, device=device, overlap=True)  # first: it pays the warm-up
    report = codec.encode_report(path, model=model, seed=1, device=device)
    if overlapped.data != report.data:
        raise RuntimeError(f"{path}: the overlapped encode wrote other bytes than the serial one")
    timer = codec.Timer()
    t = time.perf_counter()
    pixels = None
    for rung in codec.iter_rungs(report.data, model=model, device=device, only_last=True, timer=timer):
        pixels = rung.pixels
    decode_total = time.perf_counter() - t
    original = load_image(path).pixels
    symbols = 3 * original.shape[0] * original.shape[1] * len(report.rungs[1:])
    enc, dec = report.seconds, timer.as_dict(decode_total)
    file_bits = 8 * len(report.data)
    return {
        "image": Path(path).name, "height": original.shape[0], "width": original.shape[1],
        "lossless": bool(np.array_equal(pixels, original)),
        "encode": enc, "decode": dec, "encode_overlap": overlapped.seconds,
        "overlap_saves": 1.0 - overlapped.seconds["total"] / enc["total"],
        "encode_tables_coder_share": (enc["tables"] + enc["coder"]) / enc["total"],
        "decode_tables_coder_share": (dec["tables"] + dec["coder"]) / dec["total"],
        "symbols": symbols,
        "coder_symbols_per_s": {"encode": symbols / enc["coder"], "decode": symbols / dec["coder"]},
        "file_bits": file_bits, "ideal_bits": report.ideal_bits,
        "file_over_ideal": file_bits / report.ideal_bits - 1.0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="an image or a folder of PNGs")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/speed_<device>.json)")
    args = parser.parse_args()
    paths = sorted(args.images.glob("*.png")) if args.images.is_dir() else [args.images]
    paths = paths[: args.limit]
    search = "C kernel" if native.available() else "numpy (no C kernel)"  # DIFFCODEC_NATIVE=0 times the fallback
    print(f"REC search: {search}")
    context = multiprocessing.get_context("spawn")
    rows = []
    with context.Pool(1, maxtasksperchild=1) as pool:
        for row in pool.imap(_one, [(str(p), args.model, args.device, args.threads) for p in paths]):
            rows.append(row)
            e, d = row["encode"], row["decode"]
            print(f"{row['image']}: encode {e['total']:.2f} s (network {e['network']:.2f}, step context "
                  f"{e['context']:.2f}, rec {e['rec']:.2f}, tables "
                  f"{e['tables']:.3f}, coder {e['coder']:.3f}; {100 * row['encode_tables_coder_share']:.1f}%), decode "
                  f"{d['total']:.2f} s (network {d['network']:.2f}, step context {d['context']:.2f}, rec "
                  f"{d['rec']:.2f}, tables {d['tables']:.3f}, "
                  f"coder {d['coder']:.3f}; "
                  f"{100 * row['decode_tables_coder_share']:.1f}%), coder {row['coder_symbols_per_s']['encode'] / 1e6:.0f}"
                  f"/{row['coder_symbols_per_s']['decode'] / 1e6:.0f} M symbols/s, file/ideal - 1 = "
                  f"{100 * row['file_over_ideal']:.4f}%, peak RSS {row['peak_rss_mib']:.0f} MiB, lossless {row['lossless']}; "
                  f"overlapped encode {row['encode_overlap']['total']:.2f} s ({100 * row['overlap_saves']:+.1f}% saved)")
    summary = {key: float(np.mean([r[key] for r in rows])) for key in
               ("encode_tables_coder_share", "decode_tables_coder_share", "file_over_ideal", "peak_rss_mib",
                "overlap_saves")}
    print("mean:", json.dumps(summary))
    out = args.out or Path(__file__).parent / "results" / f"speed_{args.device}.json"
    out.write_text(json.dumps({"device": args.device, "threads": args.threads, "model": args.model,
                               "rec_search": search, "images": rows, "mean": summary}, indent=1))


if __name__ == "__main__":
    main()
