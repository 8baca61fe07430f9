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
    return native.search(GaussianScreen(*toy_step(m)), streams, np.arange(m), np.array([0, m]), np.zeros((2, 1)))


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
