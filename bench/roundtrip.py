"""Shared by the bench scripts: encode, decode every rung in a fresh decoder, check the last rung is exact."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import diffcodec
from diffcodec.codec import EncodeResult, Rung


def timed_round_trip(image: str | Path | np.ndarray, pixels: np.ndarray, model: str, label: str,
                     **encode_options: object) -> tuple[EncodeResult, list[Rung], float, float]:
    """(encoder report, decoded rungs, encode seconds, decode seconds); exits if the last rung is not exact."""
    t = time.perf_counter()
    result = diffcodec.encode_report(image, model=model, seed=0, **encode_options)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    rungs = diffcodec.decode_rungs(result.data, model=model)
    t_dec = time.perf_counter() - t
    if not np.array_equal(rungs[-1].pixels, pixels):
        raise SystemExit(f"{label}: last rung is not exact")
    return result, rungs, t_enc, t_dec
