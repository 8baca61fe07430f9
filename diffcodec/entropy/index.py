"""Entropy coding of REC candidate indices: index j of a chunk with budget b bits and 2^(b + margin) candidates
is coded with P(j) proportional to 1 / (j + 2^b), j < 2^(b + margin).

The Poisson functional representation picks log2 j <= KL + O(1), so this pmf (flat up to 2^b, then a 1/j tail)
costs about log2(j + 2^b) + log2 ln(2^margin + 1) bits: roughly b + 2 bits for a chunk of KL b and margin 2.
"""

from __future__ import annotations

import functools

import constriction
import numpy as np

from diffcodec.errors import BadInputError, BitstreamError


@functools.lru_cache(maxsize=64)
def index_pmf(bits: int, margin: int) -> np.ndarray:
    """P(j) = (1 / (j + 2^bits)) / Z over j = 0 .. 2^(bits + margin) - 1 (float64)."""
    weights = 1.0 / (np.arange(1 << (bits + margin), dtype=np.float64) + (1 << bits))
    return weights / weights.sum()


@functools.lru_cache(maxsize=64)
def _model(bits: int, margin: int) -> constriction.stream.model.Categorical:
    return constriction.stream.model.Categorical(index_pmf(bits, margin), perfect=False)


def _groups(bits: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(b, positions of the chunks with budget b) in coding order: b ascending, positions ascending."""
    return [(int(b), np.flatnonzero(bits == b)) for b in np.unique(bits)]


def encode_indices(indices: np.ndarray, bits: np.ndarray, margin: int) -> tuple[bytes, float]:
    """Code chunk indices (c,) with budgets `bits` (c,); returns (payload, information content in bits under the
    float pmf; the coder's quantised tables and flush add < 64 bits plus ~1e-4 bits per index)."""
    indices, bits = np.asarray(indices, np.int64), np.asarray(bits, np.int64)
    if indices.shape != bits.shape or (indices < 0).any() or (indices >= 1 << (bits + margin)).any():
        raise BadInputError("every index must lie in [0, 2^(bits + margin)) of its chunk")
    encoder = constriction.stream.queue.RangeEncoder()
    info = 0.0
    for b, rows in _groups(bits):
        encoder.encode(indices[rows].astype(np.int32), _model(b, margin))
        info -= float(np.log2(index_pmf(b, margin)[indices[rows]]).sum())
    return encoder.get_compressed().astype("<u4").tobytes(), info


def decode_indices(payload: bytes, bits: np.ndarray, margin: int) -> np.ndarray:
    """Inverse of `encode_indices` given the same budgets and margin: (c,) int64 indices."""
    if len(payload) % 4:
        raise BitstreamError(f"REC index payload of {len(payload)} bytes is not whole 32-bit words: it is cut or padded")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
    bits = np.asarray(bits, np.int64)
    indices = np.zeros(bits.shape, np.int64)
    try:
        for b, rows in _groups(bits):
            indices[rows] = decoder.decode(_model(b, margin), len(rows))
    except (RuntimeError, ValueError, AssertionError) as err:
        raise BitstreamError(f"REC index payload is corrupt: the range decoder failed ({err})") from err
    if not decoder.maybe_exhausted():
        raise BitstreamError("REC index payload does not end where its indices do: it is truncated, padded or corrupt")
    return indices
