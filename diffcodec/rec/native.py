"""The fused REC search kernel (`search.c`), compiled on first use with the system's C compiler and loaded by ctypes.

It is optional: without a C compiler (or with DIFFCODEC_NATIVE=0) `search()` returns None and the encoder searches
with numpy (`coder._screened_batch`). Files are the same kind either way: the kernel only picks candidates; the
decoder never runs it. The shared library is cached under $DIFFCODEC_CACHE (default $XDG_CACHE_HOME/diffcodec, or
~/.cache/diffcodec), named by a hash of the source and the compiler command, and written atomically.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffcodec.rec.score import GaussianScreen

SOURCE = Path(__file__).with_name("search.c")
FLAGS = ["-O3", "-ffp-contract=off", "-fPIC", "-shared"]
LIBS = ["-lm"]  # after the source: the kernel takes log T


def cache_dir() -> Path:
    """Where the compiled kernel lives."""
    if os.environ.get("DIFFCODEC_CACHE"):
        return Path(os.environ["DIFFCODEC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "diffcodec"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _build(cc: str) -> Path | None:
    source = SOURCE.read_bytes()
    tag = hashlib.sha256(source + " ".join([cc, *FLAGS, *LIBS, sys.platform]).encode()).hexdigest()[:16]
    lib = cache_dir() / f"rec_search_{tag}.so"
    if lib.is_file():
        return lib
    try:
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
            out = Path(tmp) / lib.name
            command = [cc, *FLAGS, "-o", str(out), str(SOURCE), *LIBS]
            subprocess.run(command, check=True, capture_output=True, timeout=120)
            os.replace(out, lib)  # atomic: a concurrent build writes the same bytes
    except (OSError, subprocess.SubprocessError):
        return None
    return lib


@functools.lru_cache(maxsize=1)
def _kernel() -> ctypes._CFuncPtr | None:
    if os.environ.get("DIFFCODEC_NATIVE", "1") == "0":
        return None
    cc = _compiler()
    lib = None if cc is None else _build(cc)
    if lib is None:
        return None
    try:
        fn = ctypes.CDLL(str(lib)).rec_search
    except (OSError, AttributeError):
        return None
    ptr = np.ctypeslib.ndpointer
    fn.argtypes = [ctypes.c_int64, ptr(np.uint64, flags="C"), ptr(np.int64, flags="C"), ptr(np.float64, flags="C"),
                   ptr(np.float64, flags="C"), ptr(np.float64, flags="C"), ptr(np.float32, flags="C"), ctypes.c_int64,
                   ptr(np.float64, flags="C"),
                   ptr(np.int64, flags="C"), ptr(np.uint16, flags="C")]
    fn.restype = None
    return fn


def available() -> bool:
    """True when the kernel is compiled and loaded (DIFFCODEC_NATIVE=0 turns it off)."""
    return _kernel() is not None


def search(screen: GaussianScreen, streams: np.ndarray, cols: np.ndarray, offsets: np.ndarray,
           gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(j* (chunks,), the winning rows' 16-bit draws (columns,)) of Gaussian chunks searched exactly by the kernel, or
    None when it is not available (the arguments of `coder._numpy_search`, but the chunks' candidate streams as
    `rng.chunk_streams` words (chunks, 4), and the arrivals as their gaps): chunk k's columns are offsets[k] ..
    offsets[k + 1] - 1, column e scores element cols[e] by `screen`, and gaps (count, chunks) holds the exponential
    gaps between the arrival times, T_j = gaps[0, k] + ... + gaps[j, k] (the kernel takes log T with the C library's
    log, which gives numpy's values here)."""
    fn = _kernel()
    if fn is None:
        return None
    chunks, count = len(offsets) - 1, gaps.shape[0]
    best_j, best_k = np.zeros(chunks, np.int64), np.zeros(int(offsets[-1]), np.uint16)
    fn(chunks, np.ascontiguousarray(streams, np.uint64), np.ascontiguousarray(offsets, np.int64), screen.quad[cols],
       screen.lin[cols], screen.table, screen.table32, count, np.array(gaps.T, np.float64, order="C"), best_j, best_k)
    return best_j, best_k
