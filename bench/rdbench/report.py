"""Mean curves over images, the tables a reader compares (PSNR at fixed bpp, lossless, BD) and the files."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from diffcodec.codec import RECONS

from .bd import bd_quality, bd_rate
from .measure import DIFFCODEC, LOSSLESS
from .metrics import ms_ssim_db

ANCHOR_BPPS = (0.25, 0.5, 1.0, 2.0)  # DESIGN.md section 5
BD_BASELINES = ("JPEG 2000", "JPEG 2000 layers", "WebP", "AVIF", "JPEG XL", "JPEG")
OURS = tuple(f"{DIFFCODEC} {r}" for r in RECONS)


def mean_curves(images: list[dict]) -> dict[str, list[dict]]:
    """codec -> its lossy points averaged over images at each setting (bpp, PSNR and MS-SSIM means)."""
    groups: dict[str, dict[object, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for im in images:
        for p in im["points"]:
            if p["setting"] != LOSSLESS:
                groups[p["codec"]][p["setting"]].append(p)
    curves = {}
    for codec, by_setting in groups.items():
        rows = []
        for setting, ps in by_setting.items():
            if len(ps) != len(images) or any(p["psnr"] is None for p in ps):
                continue  # a setting some image decoded exactly has no mean PSNR: left out of the curve
            msssim = float(np.mean([p["msssim"] for p in ps]))
            rows.append({"setting": setting, "bpp": float(np.mean([p["bpp"] for p in ps])),
                         "psnr": float(np.mean([p["psnr"] for p in ps])), "msssim": msssim,
                         "msssim_db": ms_ssim_db(msssim)})
        curves[codec] = sorted(rows, key=lambda r: r["bpp"])
    return curves


def lossless_bpsp(images: list[dict]) -> dict[str, float]:
    """Lossless codec -> mean bits per sub-pixel over images."""
    per: dict[str, list[float]] = defaultdict(list)
    for im in images:
        for p in im["points"]:
            if p["setting"] == LOSSLESS:
                per[p["codec"]].append(p["bytes"] * 8 / (3 * im["width"] * im["height"]))
    return {codec: float(np.mean(v)) for codec, v in per.items()}


def psnr_at(curve: list[dict], bpp: float) -> float | None:
    """PSNR at `bpp`, linear in log-bpp between the two nearest points (None outside the curve)."""
    x = [math.log(r["bpp"]) for r in curve]
    if not curve or not x[0] <= math.log(bpp) <= x[-1]:
        return None
    return float(np.interp(math.log(bpp), x, [r["psnr"] for r in curve]))


def bd_table(curves: dict[str, list[dict]]) -> list[dict]:
    """BD-rate (PSNR and MS-SSIM dB) and BD-PSNR of each diffcodec reconstruction against each baseline."""
    rows = []
    for ours in OURS:
        for base in BD_BASELINES:
            if ours not in curves or base not in curves:
                continue
            a, t = curves[base], curves[ours]
            args = {key: ([r["bpp"] for r in a], [r[key] for r in a], [r["bpp"] for r in t], [r[key] for r in t])
                    for key in ("psnr", "msssim_db")}
            rate, gain, rate_ms = bd_rate(*args["psnr"]), bd_quality(*args["psnr"]), bd_rate(*args["msssim_db"])
            rows.append({
                "diffcodec": ours, "anchor": base,
                "bd_rate_psnr_pct": rate and rate.value, "psnr_range_db": rate and [rate.lo, rate.hi],
                "bd_psnr_db": gain and gain.value, "bpp_range": gain and [gain.lo, gain.hi],
                "bd_rate_msssim_pct": rate_ms and rate_ms.value, "msssim_db_range": rate_ms and [rate_ms.lo, rate_ms.hi],
            })
    return rows


def mean_nelbo(images: list[dict]) -> float | None:
    """diffcodec's mean NELBO in bits per sub-pixel (None unless every image has it)."""
    values = [im.get("nelbo_bpsp") for im in images]
    return None if any(v is None for v in values) else float(np.mean(values))


def summarize(images: list[dict]) -> dict:
    """Everything computed from the per-image points."""
    curves = mean_curves(images)
    return {
        "curves": curves,
        "lossless_bpsp": lossless_bpsp(images),
        "nelbo_bpsp": mean_nelbo(images),
        "psnr_at_bpp": {codec: {str(b): psnr_at(c, b) for b in ANCHOR_BPPS} for codec, c in curves.items()},
        "bd": bd_table(curves),
    }


def _fmt(v: float | None, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def text_report(summary: dict, n_images: int) -> str:
    """The tables printed at the end of a run."""
    lines = [f"mean over {n_images} images; PSNR (dB, RGB) at " + " / ".join(f"{b:g}" for b in ANCHOR_BPPS) + " bpp"]
    for codec, at in summary["psnr_at_bpp"].items():
        lines.append(f"  {codec:20s} " + " / ".join(_fmt(v, ".2f") for v in at.values()))
    lines.append("lossless, bits per sub-pixel:")
    for codec, v in sorted(summary["lossless_bpsp"].items(), key=lambda kv: kv[1]):
        lines.append(f"  {codec:20s} {v:.3f}")
    lines.append(f"  (diffcodec's NELBO under the coded steps: {_fmt(summary['nelbo_bpsp'], '.3f')})")
    lines.append("BD of diffcodec against each anchor (negative BD-rate / positive BD-PSNR: diffcodec better):")
    for r in summary["bd"]:
        rng = r["bpp_range"]
        lines.append(f"  {r['diffcodec']:20s} vs {r['anchor']:17s} BD-rate {_fmt(r['bd_rate_psnr_pct'], '+7.1f')} %  "
                     f"BD-PSNR {_fmt(r['bd_psnr_db'], '+6.2f')} dB  BD-rate(MS-SSIM) {_fmt(r['bd_rate_msssim_pct'], '+7.1f')} %"
                     + (f"  over {rng[0]:.2f}-{rng[1]:.2f} bpp" if rng else ""))
    return "\n".join(lines)


def write_json(path: Path, meta: dict, summary: dict, images: list[dict]) -> None:
    """results.json: meta, mean curves and tables, then every image's points (PSNR null = exact)."""
    path.write_text(json.dumps({"meta": meta, "mean": summary, "images": images}, indent=1, allow_nan=False))


def write_csv(path: Path, summary: dict, images: list[dict]) -> None:
    """results.csv: one row per (image, codec, setting), then the means (image "mean", bytes empty)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "codec", "setting", "bytes", "bpp", "psnr", "msssim"])
        for im in images:
            for p in im["points"]:
                w.writerow([im["image"], p["codec"], p["setting"], p["bytes"], f"{p['bpp']:.6f}",
                            "inf" if p["psnr"] is None else f"{p['psnr']:.4f}", f"{p['msssim']:.6f}"])
        for codec, curve in summary["curves"].items():
            for r in curve:
                w.writerow(["mean", codec, r["setting"], "", f"{r['bpp']:.6f}", f"{r['psnr']:.4f}", f"{r['msssim']:.6f}"])
        for codec, v in summary["lossless_bpsp"].items():
            w.writerow(["mean", codec, LOSSLESS, "", f"{3 * v:.6f}", "inf", "1.000000"])
