"""The whole benchmark on a folder: measure each image (cached, so an interrupted run resumes), then the
mean curves, BD table, results.json / results.csv, the R-D plots and the contact sheet."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import imagecodecs
import PIL
import torch
from PIL import Image, features
from tqdm import tqdm

from diffcodec import step_context
from diffcodec.bitstream import CODERS
from diffcodec.codec import RECONS, iter_rungs
from diffcodec.image import load_image
from diffcodec.train.data import list_images
from diffcodec.zoo import load_model

from . import baselines, plots, report
from .measure import measure_baselines, measure_diffcodec
from .metrics import psnr

SHEET_CROP = 192  # pixels of the contact sheet's centred crop
SHEET_DEFAULT = "kodim23.png"  # the contact sheet's image when present (else the first image)


def library_versions() -> dict[str, str]:
    """The codec libraries behind the baselines (their versions decide the baseline bytes)."""
    return {"pillow": PIL.__version__, "libjpeg": str(features.version("jpg")), "libwebp": str(features.version("webp")),
            "openjpeg": str(features.version("jpg_2000")), "zlib": str(features.version("zlib")),
            "imagecodecs": imagecodecs.__version__, "libavif": imagecodecs.avif_version(),
            "libjxl": imagecodecs.jpegxl_version(), "torch": torch.__version__}


def sweeps() -> dict[str, list]:
    """Every baseline's settings (part of the cache key: changing a sweep re-measures)."""
    out: dict[str, list] = {c.name: list(c.settings) for c in baselines.LOSSY}
    out[baselines.J2K_LAYERS] = list(baselines.J2K_BPPS)
    out["lossless"] = list(baselines.LOSSLESS)
    return out


def _cached(path: Path, key: dict) -> dict | None:
    """The result stored under `key`, compared as JSON keeps it (a tuple in the key is stored as a list)."""
    if not path.is_file():
        return None
    blob = json.loads(path.read_text())
    return blob["result"] if blob.get("key") == json.loads(json.dumps(key)) else None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _store(path: Path, key: dict, result: dict) -> dict:
    _write_atomic(path, json.dumps({"key": key, "result": result}).encode())
    return result


def measure_all(paths: list[Path], cache: Path, model: str, seed: int, keys: dict[str, dict],
                recons: tuple[str, ...] = RECONS) -> list[dict]:
    """Each image's result. Its two parts are cached apart, each under its own key: `keys["diffcodec"]` (model,
    weights, steps, seed, step coder, the container's chunk coders, the reconstructions measured) and `keys["baselines"]` (sweeps, library versions), so a new model re-measures only diffcodec."""
    cache.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    bar = tqdm(paths, unit="image", dynamic_ncols=True)
    fresh_seconds: list[float] = []
    for path in bar:
        t = time.perf_counter()
        original = None
        status = lambda stage, name=path.name: bar.set_postfix_str(f"{name}: {stage}")  # noqa: E731
        ours_entry, theirs_entry = cache / f"{path.stem}.diffcodec.json", cache / f"{path.stem}.baselines.json"
        ours = _cached(ours_entry, keys["diffcodec"])
        if ours is None:
            original = load_image(path).pixels
            data, ours = measure_diffcodec(path, original, model, seed, status, recons)
            _write_atomic(cache / f"{path.stem}.dcz", data)
            _store(ours_entry, keys["diffcodec"], ours)
        theirs = _cached(theirs_entry, keys["baselines"])
        if theirs is None:
            original = load_image(path).pixels if original is None else original
            theirs = _store(theirs_entry, keys["baselines"], measure_baselines(original, status))
        if original is not None:
            fresh_seconds.append(time.perf_counter() - t)
            if len(fresh_seconds) == 1:
                left = len(paths) - len(results) - 1
                bar.write(f"{path.name}: {fresh_seconds[0]:.0f} s; the {left} images left take about "
                          f"{left * fresh_seconds[0] / 60:.0f} min more")
        with Image.open(path) as im:
            w, h = im.size
        results.append({"image": path.name, "width": w, "height": h, "seed": seed,
                         "nelbo_bpsp": ours.get("nelbo_bpsp"),  # None in a cache entry from before it was kept
                         "points": ours["points"] + theirs["points"],
                         "seconds": {"diffcodec": ours["seconds"], "baselines": theirs["seconds"]}})
    return results


def sheet(folder_paths: list[Path], cache: Path, model: str, name: str | None, title: str, out: Path,
          recons: tuple[str, ...] = RECONS) -> None:
    """Contact sheet of one image: a centred crop at every rung, one row per reconstruction of `recons`."""
    path = next((p for p in folder_paths if p.name == (name or SHEET_DEFAULT)), folder_paths[0])
    original = load_image(path).pixels
    data = (cache / f"{path.stem}.dcz").read_bytes()
    box = plots.crop_box(*original.shape[:2], SHEET_CROP)
    rows = {}
    for recon in recons:
        tiles = []
        for r in iter_rungs(data, recon=recon, model=model):
            p = psnr(r.pixels, original)
            caption = f"rung {r.rung}\n{r.bpp:.3f} bpp, " + ("lossless" if p == float("inf") else f"{p:.2f} dB")
            tiles.append((caption, r.pixels[box]))
        rows[recon] = tiles
    plots.contact_sheet(rows, f"{path.name}: a {SHEET_CROP} x {SHEET_CROP} centre crop of ONE file decoded rung by rung "
                              f"(captions: bpp and PSNR of the whole image; the last rung is the original); {title}", out)


def run(folder: Path, out: Path, model: str = "default", seed: int = 0, limit: int = 0,
        sheet_image: str | None = None, log: Callable[[str], None] = print, recons: tuple[str, ...] = RECONS) -> dict:
    """Run the benchmark and write results.json, results.csv, rd_psnr.png, rd_msssim.png, contact_sheet.png;
    diffcodec's rungs shown by each of `recons` (codec.RECONS: all of them)."""
    paths = list_images(folder)[: limit or None]
    loaded = load_model(model)
    identity = loaded.identity()
    coding = asdict(loaded.coding)
    keys = {"diffcodec": {**identity, "seed": seed, "coding": coding,
                          "coders": list(CODERS.values()),  # a new chunk layout re-measures too
                          "min_step_bits": step_context.MIN_STEP_BITS,  # so does another rule for grouping a step
                          "recons": list(recons)},
            "baselines": {"sweeps": sweeps(), "versions": library_versions()}}
    images = measure_all(paths, out / "cache", model, seed, keys, recons)
    summary = report.summarize(images)
    meta = {"folder": folder.name, "images": len(images), **identity, "coding": coding, "seed": seed,
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
            **keys["baselines"],
            "seconds_per_image": {k: sum(im["seconds"][k] for im in images) / len(images) for k in images[0]["seconds"]}}
    out.mkdir(parents=True, exist_ok=True)
    report.write_json(out / "results.json", meta, summary, images)
    report.write_csv(out / "results.csv", summary, images)
    label = f"{folder.name}, mean over {len(images)} image{'s' if len(images) > 1 else ''}"
    rec = "" if coding["coder"] == "uq" else f", {coding['coder']} {coding['posterior']} rec"
    fits = "".join(f", {name} {identity[key]}" for key, name in
                   (("context", "pixel context"), ("step_context", "step context"), ("refine", "refine")) if identity[key])
    note = (f"model {loaded.name} ({loaded.weights_hash.hex()}, {loaded.default_steps} steps{rec}{fits}), "
            f"seed {seed}, {meta['date']}")
    plots.rd_plot(summary["curves"], "psnr", "PSNR (dB, RGB)", f"Rate-distortion: {label}", note, out / "rd_psnr.png")
    plots.rd_plot(summary["curves"], "msssim_db", "MS-SSIM (dB) = -10 log10(1 - MS-SSIM)",
                  f"Rate-distortion (MS-SSIM): {label}", note, out / "rd_msssim.png")
    sheet(paths, out / "cache", model, sheet_image, note, out / "contact_sheet.png", recons)
    log(report.text_report(summary, len(images)))
    return {"meta": meta, "mean": summary, "images": images}
