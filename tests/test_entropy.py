"""Tests of diffcodec/entropy: integer rate tables against the analytic pmf, and the range coder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffcodec.entropy import (
    ESCAPE_BITS,
    PRECISION,
    decode_symbols,
    encode_symbols,
    information_bits,
    pmf_rows,
    symbol_windows,
)
from diffcodec.errors import BadInputError, BitstreamError

TOTAL = 1 << PRECISION


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # sigmoid(x) = (1 + tanh(x / 2)) / 2


def _analytic_pmf(k: np.ndarray, mean: np.ndarray, scale: np.ndarray, lo=None, hi=None) -> np.ndarray:
    """P(k) = G(k + 1/2) - G(k - 1/2), G(lo - 1/2) := 0, G(hi + 1/2) := 1 (k broadcast against mean)."""
    upper = _sigmoid((k + 0.5 - mean) / scale)
    lower = _sigmoid((k - 0.5 - mean) / scale)
    if lo is not None:
        lower = np.where(k <= lo, 0.0, lower)
    if hi is not None:
        upper = np.where(k >= hi, 1.0, upper)
    outside = (k < lo if lo is not None else False) | (k > hi if hi is not None else False)
    return np.where(outside, 0.0, upper - lower)


def _draw(rng: np.random.Generator, mean: np.ndarray, scale: np.ndarray, lo=None, hi=None) -> np.ndarray:
    """Symbols drawn from the model: round(mean + logistic noise), folded into [lo, hi]."""
    k = np.round(mean + rng.logistic(0.0, scale)).astype(np.int64)
    return np.clip(k, lo, hi) if lo is not None else k


def _model(rng: np.random.Generator, n: int, scale_range: tuple[float, float], bounded: bool):
    """(mean, scale, lo, hi): dithers in (-1/2, 1/2) when unbounded, pixel predictions when bounded."""
    scale = np.exp(rng.uniform(*np.log(scale_range), n))
    if bounded:
        return rng.uniform(-20.0, 275.0, n), scale, 0, 255
    return rng.uniform(-0.5, 0.5, n), scale, None, None


def _body_bits(payload: bytes) -> int:
    """Bits of the compressed words: the payload less its 1-byte header."""
    return 8 * (len(payload) - 1)


@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("scale_range", [(0.05, 0.3), (0.3, 3.0), (3.0, 30.0)])
def test_rows_are_exact_integer_pmfs_close_to_the_logistic(bounded: bool, scale_range: tuple[float, float]) -> None:
    rng = np.random.default_rng(1)
    mean, scale, lo, hi = _model(rng, 4000, scale_range, bounded)
    window = int(symbol_windows(torch.from_numpy(scale), lo=lo, hi=hi).max())
    base, freqs = pmf_rows(torch.from_numpy(mean), torch.from_numpy(scale), window, lo, hi)
    assert freqs.shape == (4000, 2 * window + 2)
    assert (freqs.sum(dim=1) == TOTAL).all()
    assert int(freqs.min()) >= 1
    k = base.numpy()[:, None] + np.arange(-window, window + 1)
    analytic = _analytic_pmf(k, mean[:, None], scale[:, None], lo, hi)
    escape = 1.0 - analytic.sum(axis=1)
    quantised = freqs.double().numpy() / TOTAL
    slack = (2 * window + 3) / TOTAL  # floor of each cumulative loses < 1/TOTAL, plus the +1 floor per bin
    assert np.abs(quantised[:, :-1] - analytic).max() <= slack
    assert np.abs(quantised[:, -1] - escape).max() <= slack


def test_rows_are_deterministic_and_bounded_rows_need_no_escape() -> None:
    mean = torch.tensor([-30.0, 0.2, 127.5, 254.9, 300.0], dtype=torch.float64)
    scale = torch.tensor([0.5, 4.0, 60.0, 1.0, 2.0], dtype=torch.float64)
    base, freqs = pmf_rows(mean, scale, 255, 0, 255)
    again = pmf_rows(mean, scale, 255, 0, 255)
    assert torch.equal(base, again[0]) and torch.equal(freqs, again[1])
    assert base.tolist() == [0, 0, 128, 255, 255]
    assert (freqs[:, -1] == 1).all()  # the window holds [lo, hi]: the escape keeps only its floor of 1


def test_windows_follow_the_scale_and_the_bounds() -> None:
    scale = torch.tensor([0.01, 0.05, 0.3, 3.0, 30.0, 1000.0])
    assert symbol_windows(scale).tolist() == [1, 1, 4, 36, 255, 255]
    assert symbol_windows(scale, 8).tolist() == [1, 1, 3, 24, 240, 255]
    assert symbol_windows(scale, lo=0, hi=255).tolist() == [1, 1, 4, 36, 255, 255]
    assert symbol_windows(scale, lo=0, hi=3).tolist() == [1, 1, 3, 3, 3, 3]
    assert symbol_windows(scale, lo=7, hi=7).tolist() == [1] * 6


def test_information_bits_match_the_analytic_rate() -> None:
    rng = np.random.default_rng(2)
    mean, scale, lo, hi = _model(rng, 20000, (0.3, 3.0), bounded=False)
    k = _draw(rng, mean, scale)
    window = int(symbol_windows(torch.from_numpy(scale)).max())
    base, freqs = pmf_rows(torch.from_numpy(mean), torch.from_numpy(scale), window)
    bits = information_bits(torch.from_numpy(k), base, freqs)
    analytic = -np.log2(_analytic_pmf(k, mean, scale)).sum()
    assert abs(bits - analytic) <= 1e-4 * analytic


@pytest.mark.parametrize("bounded", [False, True])
@pytest.mark.parametrize("scale_range", [(0.05, 0.3), (0.3, 3.0), (3.0, 30.0), (0.05, 30.0)])
def test_round_trip_and_payload_matches_information_bits(bounded: bool, scale_range: tuple[float, float]) -> None:
    rng = np.random.default_rng(3)
    mean, scale, lo, hi = _model(rng, 100_000, scale_range, bounded)
    k = _draw(rng, mean, scale, lo, hi)
    payload, bits = encode_symbols(k, mean.astype(np.float32), scale.astype(np.float32), lo, hi)
    decoded = decode_symbols(payload, mean.astype(np.float32), scale.astype(np.float32), lo, hi)
    assert decoded.dtype == np.int64 and np.array_equal(decoded, k)
    assert abs(_body_bits(payload) - bits) <= 1e-3 * bits + 64


@pytest.mark.parametrize("bounded", [False, True])
def test_zero_and_one_symbol(bounded: bool) -> None:
    lo, hi = (0, 255) if bounded else (None, None)
    payload, bits = encode_symbols(np.zeros(0, np.int64), np.zeros(0), np.ones(0), lo, hi)
    assert bits == 0.0 and decode_symbols(payload, np.zeros(0), np.ones(0), lo, hi).shape == (0,)
    for symbol in (0, 7, 255):
        payload, bits = encode_symbols(np.array([symbol]), np.array([3.2]), np.array([1.5]), lo, hi)
        assert decode_symbols(payload, np.array([3.2]), np.array([1.5]), lo, hi).tolist() == [symbol]


def test_single_value_bounds_and_tensor_inputs() -> None:
    mean, scale = torch.linspace(-3.0, 9.0, 50), torch.full((50,), 0.7)
    payload, bits = encode_symbols(np.full(50, 7), mean, scale, 7, 7)
    assert np.array_equal(decode_symbols(payload, mean.numpy(), scale.numpy(), 7, 7), np.full(50, 7))
    assert bits < 50 * 1e-5  # only the escape floor of 1 / 2**24 is spent


def test_escape_round_trips_outliers_and_charges_32_bits() -> None:
    rng = np.random.default_rng(4)
    n = 50_000
    mean, scale = rng.uniform(-0.5, 0.5, n), np.full(n, 0.5)
    k = _draw(rng, mean, scale)
    outliers = {10: 10**6, 11: -(10**7), 12: 2**31 - 1, 13: -(2**31), 40_000: 12345, n - 1: -99}
    for index, value in outliers.items():
        k[index] = value
    payload, bits = encode_symbols(k, mean, scale)
    assert np.array_equal(decode_symbols(payload, mean, scale), k)
    no_outliers = np.where(np.isin(np.arange(n), list(outliers)), 0, k)
    assert bits - encode_symbols(no_outliers, mean, scale)[1] > len(outliers) * ESCAPE_BITS


def test_offsets_beyond_32_bits_are_refused() -> None:
    with pytest.raises(BadInputError, match="32 bits"):
        encode_symbols(np.array([2**31]), np.array([-0.4]), np.array([1.0]))


@pytest.mark.parametrize(
    ("symbols", "mean", "scale", "bounds", "message"),
    [
        (np.array([1, 2]), np.zeros(2), np.array([1.0, 0.0]), (None, None), "scale"),
        (np.array([1, 2]), np.array([0.0, np.nan]), np.ones(2), (None, None), "mean"),
        (np.array([1, 2]), np.zeros(3), np.ones(3), (None, None), "length 3"),
        (np.array([1.0, 2.0]), np.zeros(2), np.ones(2), (None, None), "integer"),
        (np.array([1, 256]), np.zeros(2), np.ones(2), (0, 255), "outside the bounds"),
        (np.array([1, 2]), np.zeros(2), np.ones(2), (5, 4), "lo=5 > hi=4"),
    ],
)
def test_bad_inputs_are_refused(symbols, mean, scale, bounds, message) -> None:
    with pytest.raises(BadInputError, match=message):
        encode_symbols(symbols, mean, scale, *bounds)


def test_malformed_payloads_raise_bitstream_error() -> None:
    rng = np.random.default_rng(5)
    n = 40_000
    mean, scale = rng.uniform(0, 255, n), np.full(n, 2.0)
    k = _draw(rng, mean, scale, 0, 255)
    payload, _ = encode_symbols(k, mean, scale, 0, 255)
    malformed = [
        (b"", "cut"),  # no header
        (payload[:-1], "cut"),  # not whole words
        (payload[:-4], "does not end"),  # a word missing
        (payload + bytes(8), "does not end"),  # words added
        (bytes([0]) + payload[1:], "rule 0"),  # window rule c = 0
        (payload[:1] + bytes(len(payload) - 1), "corrupt"),  # zeroed words
    ]
    for bad, message in malformed:
        with pytest.raises(BitstreamError, match=message):
            decode_symbols(bad, mean, scale, 0, 255)


def test_decoding_with_another_model_raises_bitstream_error() -> None:
    rng = np.random.default_rng(6)
    n = 20_000
    mean, scale = rng.uniform(0, 255, n), np.full(n, 2.0)
    payload, _ = encode_symbols(_draw(rng, mean, scale, 0, 255), mean, scale, 0, 255)
    with pytest.raises(BitstreamError):
        decode_symbols(payload, mean + 7.0, scale * 3.0, 0, 255)


def test_tables_are_built_on_the_cpu_unless_the_model_is_on_cuda_with_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from diffcodec.entropy import coder, rate_table

    assert coder.table_builder(torch.device("cpu")) is rate_table
    monkeypatch.setitem(sys.modules, "diffcodec.entropy.triton_tables", None)  # as without triton: ImportError
    assert coder.table_builder(torch.device("cuda")) is rate_table


def test_parts_sharing_one_range_coder_round_trip_with_one_flush() -> None:
    """Symbols of several parts, their head numbers and REC indices in one coder: the decoder reads them back part by
    part, and the file is smaller than the parts coded apart."""
    from diffcodec.entropy.coder import decode_symbols_from, encode_symbols_into
    from diffcodec.entropy.index import decode_indices_from, encode_indices_into
    from diffcodec.entropy.shared import (RangeEncoder, check_exhausted, decode_count, decode_signed, encode_count,
                                          encode_signed, finish, new_decoder, new_encoder)

    rng = np.random.default_rng(7)
    parts = []
    for n in (0, 1, 300, 5000):
        mean, scale = rng.uniform(-20, 20, n), rng.uniform(0.2, 5.0, n)
        budgets = rng.integers(1, 9, n // 10)
        parts.append((_draw(rng, mean, scale), mean, scale, budgets, rng.integers(0, 1 << (budgets + 2)),
                      int(rng.integers(0, 1 << 20)), int(rng.integers(-(1 << 20), 1 << 20))))
    def write(encoder: RangeEncoder, part: tuple) -> None:
        k, mean, scale, budgets, indices, count, signed = part
        encode_count(encoder, count)
        encode_signed(encoder, signed)
        encode_indices_into(encoder, indices, budgets, 2, 40)
        encode_symbols_into(encoder, k, mean, scale)

    encoder, apart = new_encoder(), 0
    for part in parts:
        write(encoder, part)
        alone = new_encoder()
        write(alone, part)
        apart += len(finish(alone))
    words = finish(encoder)
    decoder = new_decoder(words, "parts")
    for k, mean, scale, budgets, indices, count, signed in parts:
        assert decode_count(decoder, "parts") == count and decode_signed(decoder, "parts") == signed
        assert np.array_equal(decode_indices_from(decoder, budgets, 2, 40), indices)
        assert np.array_equal(decode_symbols_from(decoder, mean, scale), k)
    check_exhausted(decoder, "parts")
    assert len(words) < apart
    with pytest.raises(BitstreamError, match="whole 32-bit words"):
        new_decoder(words[:-1], "parts")
    decoder = new_decoder(words + bytes(8), "parts")
    for k, mean, scale, budgets, indices, count, signed in parts:
        decode_count(decoder, "parts"), decode_signed(decoder, "parts")
        decode_indices_from(decoder, budgets, 2, 40), decode_symbols_from(decoder, mean, scale)
    with pytest.raises(BitstreamError, match="does not end"):
        check_exhausted(decoder, "parts")
