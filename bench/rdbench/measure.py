"""Measure one image: diffcodec's rungs from ONE file, every baseline setting, every lossless codec.

A measurement is a point: codec, setting, real file bytes, bpp, PSNR and MS-SSIM of the DECODED pixels
against the original (PSNR None and MS-SSIM 1 when the decode is exact, which lossless codecs must be).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from diffcodec.codec import RECONS, encode_report, iter_rungs

from . import baselines
from .metrics import ms_ssim, psnr

LOSSLESS = "lossless"  # the setting of every lossless point
DIFFCODEC = "diffcodec"  # the lossless rung; the lossy rungs are "diffcodec <recon>"

Status = Callable[[str], None]


def point(codec: str, setting: float | str, nbytes: int, decoded: np.ndarray, original: np.ndarray) -> dict:
    """One measurement: bytes, bpp, PSNR (None when exact) and MS-SSIM of decoded pixels."""
    h, w = original.shape[:2]
    exact = np.array_equal(decoded, original)
    if setting == LOSSLESS and not exact:
        raise RuntimeError(f"{codec}: the lossless decode is not exact")
    return {"codec": codec, "setting": setting, "bytes": nbytes, "bpp": nbytes * 8 / (h * w),
            "psnr": None if exact else psnr(decoded, original), "msssim": 1.0 if exact else ms_ssim(decoded, original)}


def diffcodec_points(path: Path, original: np.ndarray, model: str, seed: int, status: Status,
                     recons: tuple[str, ...] = RECONS) -> tuple[bytes, float, list[dict]]:
    """Encode once, then decode that one file rung by rung with each of `recons` (fresh decoder each; the lossless
    point from the first): the file, the encoder's NELBO in bits per sub-pixel, and the points."""
    status("diffcodec encode")
    result = encode_report(path, model=model, seed=seed)
    data, nelbo_bpsp = result.data, result.nelbo_bits / original.size
    points = []
    for recon in recons:
        status(f"diffcodec {recon}")
        rungs = list(iter_rungs(data, recon=recon, model=model))
        *lossy, last = rungs
        points += [point(f"{DIFFCODEC} {recon}", r.rung, r.cum_bytes, r.pixels, original) for r in lossy]
        if recon == recons[0]:
            points.append(point(DIFFCODEC, LOSSLESS, last.cum_bytes, last.pixels, original))
        elif not np.array_equal(last.pixels, original):
            raise RuntimeError(f"diffcodec {recon}: the last rung is not exact")
    return data, nelbo_bpsp, points


def baseline_points(original: np.ndarray, status: Status) -> list[dict]:
    """Every lossy setting, the progressive JPEG 2000 layers and every lossless codec."""
    points = []
    for codec in baselines.LOSSY:
        status(codec.name)
        for s in codec.settings:
            data = codec.encode(original, s)
            points.append(point(codec.name, s, len(data), baselines.decode(data), original))
    status(baselines.J2K_LAYERS)
    for layers, data in enumerate(baselines.j2k_layer_files(original), start=1):
        points.append(point(baselines.J2K_LAYERS, layers, len(data), baselines.decode(data), original))
    for name, encode in baselines.LOSSLESS.items():
        status(name)
        data = encode(original)
        points.append(point(name, LOSSLESS, len(data), baselines.decode(data), original))
    return points


def measure_diffcodec(path: Path, original: np.ndarray, model: str, seed: int, status: Status,
                      recons: tuple[str, ...] = RECONS) -> tuple[bytes, dict]:
    """The diffcodec file of one image and its points (for `recons`) and NELBO (bits per sub-pixel), with the
    seconds they took."""
    t = time.perf_counter()
    data, nelbo_bpsp, points = diffcodec_points(path, original, model, seed, status, recons)
    return data, {"points": points, "nelbo_bpsp": nelbo_bpsp, "seconds": time.perf_counter() - t}


def measure_baselines(original: np.ndarray, status: Status) -> dict:
    """Every baseline point of one image, with the seconds they took."""
    t = time.perf_counter()
    points = baseline_points(original, status)
    return {"points": points, "seconds": time.perf_counter() - t}
