"""Entropy coding of REC candidate indices: index j of a chunk with budget b bits and 2^(b + margin) candidates.

Two pmfs over j < 2^(b + margin), both fixed by numbers the decoder reads from the payload:
- flat (the first `rec` layout): P(j) proportional to 1 / (j + 2^b): flat up to 2^b, then a 1/j tail; it costs
  about log2(j + 2^b) + log2 ln(2^margin + 1) bits, roughly b + 2.5 for margin 4.
- power (the `rec-power` layout): P(j) proportional to (j + 1)^-a with a = alpha / ALPHA_UNITS, alpha a byte the
  encoder chooses per step (`best_alpha`) to make that step's indices cheapest. The Poisson functional
  representation's j* is mostly far below 2^b (median 10 for b = 5, margin 4, on held-out photos), and this pmf
  costs about one bit less per chunk there.
"""

from __future__ import annotations

import functools

import constriction
import numpy as np

from diffcodec.entropy.shared import finish, new_encoder
from diffcodec.errors import BadInputError, BitstreamError


ALPHA_UNITS = 64  # the power pmf's exponent a = alpha / 64
ALPHA_CHOICES = range(32, 129, 2)  # the exponents the encoder tries: 0.5 .. 2


@functools.lru_cache(maxsize=256)
def index_pmf(bits: int, margin: int, alpha: int | None = None) -> np.ndarray:
    """P(j) over j = 0 .. 2^(bits + margin) - 1 (float64): proportional to 1 / (j + 2^bits) (alpha None), else
    to (j + 1)^-(alpha / ALPHA_UNITS)."""
    j = np.arange(1 << (bits + margin), dtype=np.float64)
    weights = 1.0 / (j + (1 << bits)) if alpha is None else (j + 1.0) ** (-alpha / ALPHA_UNITS)
    return weights / weights.sum()


@functools.lru_cache(maxsize=256)
def _model(bits: int, margin: int, alpha: int | None) -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(index_pmf(bits, margin, alpha), perfect=False)


def index_bits(indices: np.ndarray, bits: np.ndarray, margin: int, alpha: int | None = None) -> float:
    """Information content of the indices under the pmf (bits)."""
    return -sum(float(np.log2(index_pmf(b, margin, alpha)[indices[rows]]).sum()) for b, rows in _groups(bits))


def best_alpha(indices: np.ndarray, bits: np.ndarray, margin: int) -> int:
    """The power pmf's alpha in ALPHA_CHOICES that makes these indices cheapest."""
    indices, bits = np.asarray(indices, np.int64), np.asarray(bits, np.int64)
    return min(ALPHA_CHOICES, key=lambda a: index_bits(indices, bits, margin, a))


def _groups(bits: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(b, positions of the chunks with budget b) in coding order: b ascending, positions ascending."""
    return [(int(b), np.flatnonzero(bits == b)) for b in np.unique(bits)]


def encode_indices(indices: np.ndarray, bits: np.ndarray, margin: int, alpha: int | None = None) -> tuple[bytes, float]:
    """Code chunk indices (c,) with budgets `bits` (c,) under the flat (alpha None) or power pmf; returns (payload,
    information content in bits under the float pmf; the coder's quantised tables and flush add < 64 bits plus
    ~1e-4 bits per index)."""
    encoder = new_encoder()
    info = encode_indices_into(encoder, indices, bits, margin, alpha)
    return finish(encoder), info


def encode_indices_into(encoder: constriction.stream.queue.RangeEncoder, indices: np.ndarray, bits: np.ndarray,
                        margin: int, alpha: int | None = None) -> float:
    """`encode_indices` into a range coder other parts share (entropy/shared.py); returns the information content."""
    indices, bits = np.asarray(indices, np.int64), np.asarray(bits, np.int64)
    if indices.shape != bits.shape or (indices < 0).any() or (indices >= 1 << (bits + margin)).any():
        raise BadInputError("every index must lie in [0, 2^(bits + margin)) of its chunk")
    for b, rows in _groups(bits):
        encoder.encode(indices[rows].astype(np.int32), _model(b, margin, alpha))
    return index_bits(indices, bits, margin, alpha)


def decode_indices(payload: bytes, bits: np.ndarray, margin: int, alpha: int | None = None) -> np.ndarray:
    """Inverse of `encode_indices` given the same budgets, margin and alpha: (c,) int64 indices."""
    if len(payload) % 4:
        raise BitstreamError(f"REC index payload of {len(payload)} bytes is not whole 32-bit words: it is cut or padded")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
    indices = decode_indices_from(decoder, bits, margin, alpha)
    if not decoder.maybe_exhausted():
        raise BitstreamError("REC index payload does not end where its indices do: it is truncated, padded or corrupt")
    return indices


def decode_indices_from(decoder: constriction.stream.queue.RangeDecoder, bits: np.ndarray, margin: int,
                        alpha: int | None = None) -> np.ndarray:
    """Inverse of `encode_indices_into`: (c,) int64 indices read from a shared range decoder."""
    bits = np.asarray(bits, np.int64)
    indices = np.zeros(bits.shape, np.int64)
    try:
        for b, rows in _groups(bits):
            indices[rows] = decoder.decode(_model(b, margin, alpha), len(rows))
    except (RuntimeError, ValueError, AssertionError) as err:
        raise BitstreamError(f"REC index payload is corrupt: the range decoder failed ({err})") from err
    return indices
