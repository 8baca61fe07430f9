"""Building and loading the fused REC search kernel (diffcodec/rec/native.py): optional, never a failure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from test_rec import toy_step
from diffcodec import rng
from diffcodec.rec import native
from diffcodec.rec.score import GaussianScreen


def search_one_chunk(m: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`native.search` of one chunk of m elements, 2 candidates."""
    streams = rng.chunk_streams(0, rng.REC_CANDIDATES, 0, np.array([0]))
    return native.search(GaussianScreen(*toy_step(m)), streams, np.arange(m), np.array([0, m]), np.ones((2, 1)))


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty kernel cache, and no loaded kernel (restored afterwards)."""
    monkeypatch.setenv("DIFFCODEC_CACHE", str(tmp_path / "cache"))
    native._kernel.cache_clear()
    yield tmp_path / "cache"
    native._kernel.cache_clear()


def test_a_failing_compiler_leaves_no_kernel_and_no_file(fresh: Path, tmp_path: Path) -> None:
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'cc: error' >&2\nexit 1\n")
    broken.chmod(0o755)
    assert native._build(str(broken)) is None
    assert not fresh.exists() or not any(fresh.rglob("*"))  # no half-written library left behind


def test_without_a_compiler_the_encoder_falls_back_to_numpy(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert not native.available()
    assert search_one_chunk(1) is None


def test_the_kernel_can_be_turned_off(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFCODEC_NATIVE", "0")
    assert not native.available() and not fresh.exists()


def test_the_kernel_is_built_once_and_cached(fresh: Path) -> None:
    if native._compiler() is None:
        pytest.skip("no C compiler here")
    assert native.available()
    built = list(fresh.glob("rec_search_*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    native._kernel.cache_clear()
    assert native.available() and built[0].stat().st_mtime_ns == stamp  # loaded from the cache, not rebuilt


def test_a_chunk_of_any_length_is_searched_by_the_kernel() -> None:
    """The kernel keeps no per-row buffer (it draws the winning row again), so a chunk longer than any the coder makes
    (coder.MAX_CHUNK_ELEMENTS) is searched too, and its winning draws are the stream's."""
    if not native.available():
        pytest.skip("no C compiler here")
    m = 5000
    found = search_one_chunk(m)
    assert found is not None
    j, k = found
    raw = rng.lanes16(rng.chunk_generator(0, rng.REC_CANDIDATES, 0, 0).bit_generator.random_raw((2, rng.draw_words(m, 16))))
    assert np.array_equal(k, raw[int(j[0]), :m])


def test_keys_the_float32_screen_cannot_tell_apart_are_decided_exactly() -> None:
    """Chunks of one element whose key is -n (n quad + lin) = (n - lin / 2)^2 - lin^2 / 4 (quad -1, all arrivals at
    T = 1), lin / 2 midway between neighbouring table values n_v and n_v+1 that first turn up a few rows apart, v
    first: the exact keys of the two tie (v's row wins), the float32 screen puts v + 1 first, and the kernel must
    score them exactly to pick what an exact search picks."""
    if not native.available():
        pytest.skip("no C compiler here")
    chunks, count = 8, 1 << 16
    screen = GaussianScreen(*toy_step(chunks))
    t, t32 = screen.table, screen.table32.astype(np.float64)
    ks = [rng.lanes16(rng.chunk_generator(7, rng.REC_CANDIDATES, 1, c).bit_generator.random_raw((count, 1)))[:, 0]
          for c in range(chunks)]
    for c, k in enumerate(ks):  # choose v for chunk c
        values, first = np.unique(k, return_index=True)
        v = values[:-1][(np.diff(values) == 1) & (np.diff(first) > 0) & (np.diff(first) < 64)]
        mid = t[v] + t[v + 1]
        rough = [0.0 - n * (n * -1.0 + mid) for n in (t32[v], t32[v + 1])]
        exact = [0.0 - n * (n * -1.0 + mid) for n in (t[v], t[v + 1])]
        screen.lin[c] = mid[(rough[1] < rough[0]) & (exact[0] <= exact[1])][0]
    screen.quad[:] = -1.0
    gaps = np.zeros((count, chunks))
    gaps[0] = 1.0
    ids = np.arange(chunks)
    found = native.search(screen, rng.chunk_streams(7, rng.REC_CANDIDATES, 1, ids), ids, np.arange(chunks + 1), gaps)
    assert found is not None
    for c, k in enumerate(ks):
        j = int(np.argmin(0.0 - t[k] * (t[k] * -1.0 + screen.lin[c])))  # the first row of the smallest exact key
        assert found[0][c] == j and found[1][c] == k[j]
