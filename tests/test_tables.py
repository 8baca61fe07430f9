"""The fast rate tables against the plain reference, bit for bit, and against files written before them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffcodec.entropy import decode_symbols, encode_symbols, rate_table, symbol_windows
from diffcodec.entropy.tables import logistic_cdf_
from reference_tables import reference_bits, reference_rows

DATA = Path(__file__).parent / "data"


def _inputs(seed: int, n: int, bounded: bool, scale_range: tuple[float, float] = (0.05, 40.0)):
    """(symbols, mean, scale) like the codec's: float32 dithers or pixel predictions, some escapes."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(*np.log(scale_range), n)).astype(np.float32)
    if bounded:
        mean = rng.uniform(-20.0, 275.0, n).astype(np.float32)
        k = np.clip(np.round(mean + rng.logistic(0.0, scale)), 0, 255).astype(np.int64)
    else:
        mean = rng.uniform(-0.5, 0.5, n).astype(np.float32)
        k = np.round(mean + rng.logistic(0.0, scale * 1.5)).astype(np.int64)
    return k, mean, scale


def _tensors(seed: int, n: int, bounded: bool, scale_range: tuple[float, float] = (0.05, 40.0)):
    k, mean, scale = _inputs(seed, n, bounded, scale_range)
    return torch.from_numpy(k), torch.from_numpy(mean).double(), torch.from_numpy(scale).double()


@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("window", [1, 2, 5, 17, 255])
def test_cpu_tables_equal_the_reference_bit_for_bit(bounded: bool, window: int) -> None:
    lo, hi = (0, 255) if bounded else (None, None)
    k, mean, scale = _tensors(window, 3000, bounded, (window / 24, window / 12))
    table = rate_table(mean, scale, window, lo, hi, k)
    base, freqs = reference_rows(mean, scale, window, lo, hi)
    columns, bits = reference_bits(k, base, freqs)
    assert torch.equal(table.base, base)
    assert torch.equal(table.rows.long() + 1, freqs)
    assert torch.equal(table.columns, columns)
    assert table.escapes == int((columns == 2 * window + 1).sum())
    assert table.bits == pytest.approx(bits, rel=1e-12)


def test_the_cdf_of_an_element_does_not_depend_on_where_it_lies() -> None:
    """torch's scalar and vectorised exp differ in the last bit for a few % of inputs; logistic_cdf_
    sends every element through the same one (alone or in a block, at any thread split)."""
    z = torch.randn(4096, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 6
    block = logistic_cdf_(z.clone())
    alone = torch.cat([logistic_cdf_(z[i : i + 1].clone()) for i in range(300)])
    assert torch.equal(block[:300], alone)


def test_tables_do_not_depend_on_the_number_of_threads() -> None:
    k, mean, scale = _tensors(7, 40_000, False, (0.3, 0.6))  # 40000 x 17 entries: split across threads
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = rate_table(mean, scale, 7, symbols=k)
        torch.set_num_threads(3)
        three = rate_table(mean, scale, 7, symbols=k)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.rows, three.rows) and torch.equal(one.columns, three.columns)


@pytest.mark.parametrize(("name", "bounded"), [("steps", False), ("pixels", True)])
def test_payloads_written_by_the_first_release_are_reproduced_and_decode(name: str, bounded: bool) -> None:
    """entropy_v1_*.bin were written by the row-major reference code: same bytes, same symbols."""
    lo, hi = (0, 255) if bounded else (None, None)
    k, mean, scale = _inputs(44, 30_000, bounded)
    old = (DATA / f"entropy_v1_{name}.bin").read_bytes()
    assert encode_symbols(k, mean, scale, lo, hi)[0] == old
    assert np.array_equal(decode_symbols(old, mean, scale, lo, hi), k)


def test_wide_and_narrow_windows_share_one_payload() -> None:
    k, mean, scale = _inputs(9, 5000, False)
    assert len(set(symbol_windows(torch.from_numpy(scale)).tolist())) > 50  # many groups, many batches
    payload, _ = encode_symbols(k, mean, scale)
    assert np.array_equal(decode_symbols(payload, mean, scale), k)
