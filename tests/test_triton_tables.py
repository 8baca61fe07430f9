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


@pytest.mark.parametrize("bounded", [False, True])
def test_the_coder_builds_tables_with_the_kernel_on_kernel_devices(bounded: bool,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatch end to end: with the kernel's devices widened to the CPU (interpreted), encode_symbols and
    decode_symbols build every table with rate_table_triton and write the CPU path's bytes."""
    from diffcodec.entropy import coder, decode_symbols, encode_symbols, triton_tables

    lo, hi = (0, 255) if bounded else (None, None)
    k, mean, scale = _tensors(11, 400, bounded, (0.05, 6.0))
    payload, bits = encode_symbols(k.numpy(), mean.float(), scale.float(), lo, hi)  # the CPU path
    calls = []

    def spy(*args: object) -> object:
        calls.append(args[2])
        return rate_table_triton(*args)

    monkeypatch.setattr(triton_tables, "rate_table_triton", spy)
    monkeypatch.setattr(coder, "KERNEL_DEVICES", (DEVICE,))
    kernel_payload, kernel_bits = encode_symbols(k.numpy(), mean.float().to(DEVICE), scale.float().to(DEVICE), lo, hi)
    assert kernel_payload == payload and kernel_bits == pytest.approx(bits, rel=1e-12)
    encoded_calls = len(calls)
    assert encoded_calls > 1  # one call per batch (several window widths here)
    decoded = decode_symbols(payload, mean.float().to(DEVICE), scale.float().to(DEVICE), lo, hi)
    assert len(calls) == 2 * encoded_calls and (decoded == k.numpy()).all()


def test_a_model_on_cuda_gets_the_kernel_when_triton_imports() -> None:
    from diffcodec.entropy import coder, rate_table

    assert coder.table_builder(torch.device("cuda")) is not rate_table
    assert coder.table_builder(torch.device("cpu")) is rate_table
