"""The Triton rate-table kernel against the plain reference, bit for bit (interpreted on the CPU without CUDA)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernel is decorated: before the import
pytest.importorskip("triton")

from diffcodec.entropy.triton_tables import rate_table_triton  # noqa: E402
from reference_tables import reference_bits, reference_rows  # noqa: E402
from test_tables import _tensors  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("window", [1, 4, 9])
def test_triton_tables_equal_the_reference_bit_for_bit(bounded: bool, window: int) -> None:
    lo, hi = (0, 255) if bounded else (None, None)
    k, mean, scale = _tensors(window, 300, bounded, (window / 24, window / 12))
    table = rate_table_triton(mean.to(DEVICE), scale.to(DEVICE), window, lo, hi, k.to(DEVICE))
    base, freqs = reference_rows(mean, scale, window, lo, hi)
    columns, bits = reference_bits(k, base, freqs)
    assert torch.equal(table.base.cpu(), base)
    assert torch.equal(table.rows.cpu().long() + 1, freqs)
    assert torch.equal(table.columns.cpu(), columns)
    assert table.escapes == int((columns == 2 * window + 1).sum())
    assert table.bits == pytest.approx(bits, rel=1e-12)
    assert torch.equal(rate_table_triton(mean.to(DEVICE), scale.to(DEVICE), window, lo, hi).rows, table.rows)
