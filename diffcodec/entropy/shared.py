"""One range coder that several parts of a chunk write into in turn: its words, and the small numbers of the parts'
heads (counts, signed differences) coded in it, so that a chunk pays one flush and no part lengths.

Numbers are coded under uniform models, Elias-gamma style: n >= 0 as the bit length L of n + 1 (Uniform(33)), then
the L - 1 bits of n + 1 below its top bit (Uniform(2^(L - 1)), in two halves past 16 bits): 5 + 2 floor(log2(n + 1))
bits at most; a signed d as 2|d| - (d < 0) (zig-zag).

    >>> encoder = new_encoder()
    >>> [round(encode_count(encoder, n), 2) for n in (0, 7, 300)]  # bits: log2(33) + L - 1
    [5.04, 8.04, 13.04]
    >>> round(encode_signed(encoder, -42), 2)
    11.04
    >>> decoder = new_decoder(finish(encoder), "demo")
    >>> [decode_count(decoder, "demo") for _ in range(3)], decode_signed(decoder, "demo")
    ([0, 7, 300], -42)
"""

from __future__ import annotations

import numpy as np

import constriction

from diffcodec.errors import BitstreamError

MAX_COUNT_BITS = 32  # numbers below 2^32 - 1
_LENGTHS = constriction.stream.model.Uniform(MAX_COUNT_BITS + 1)
_HALF = 16  # bits of one uniform symbol of a number's low bits

RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder


def new_encoder() -> RangeEncoder:
    """An empty range coder for the parts of one chunk."""
    return constriction.stream.queue.RangeEncoder()


def finish(encoder: RangeEncoder) -> bytes:
    """The coder's words (u32 little-endian) after its one flush."""
    return encoder.get_compressed().astype("<u4").tobytes()


def new_decoder(words: bytes, what: str) -> RangeDecoder:
    """A range decoder over `words` (BitstreamError naming `what` unless they are whole 32-bit words)."""
    if len(words) % 4:
        raise BitstreamError(f"{what}: {len(words)} bytes of range coder words are not whole 32-bit words: it is cut "
                             "or padded")
    return constriction.stream.queue.RangeDecoder(np.frombuffer(words, "<u4").astype(np.uint32))


def check_exhausted(decoder: RangeDecoder, what: str) -> None:
    """BitstreamError unless the decoder stopped where its words end."""
    if not decoder.maybe_exhausted():
        raise BitstreamError(f"{what} does not end where its symbols do: it is truncated, padded or corrupt")


def _widths(bits: int) -> list[int]:
    """The widths of the uniform symbols that hold `bits` low bits of a number, high half first: at most _HALF each."""
    return [_HALF] * (bits // _HALF) + ([bits % _HALF] if bits % _HALF else [])


def encode_count(encoder: RangeEncoder, n: int) -> float:
    """Code n in [0, 2^32 - 1); returns its bits."""
    if not 0 <= n < (1 << MAX_COUNT_BITS) - 1:
        raise ValueError(f"a count of {n} is out of range")
    length = (n + 1).bit_length()
    encoder.encode(length, _LENGTHS)
    shift = length - 1
    for width in _widths(length - 1):
        shift -= width
        encoder.encode(((n + 1) >> shift) & ((1 << width) - 1), constriction.stream.model.Uniform(1 << width))
    return float(np.log2(MAX_COUNT_BITS + 1) + length - 1)


def decode_count(decoder: RangeDecoder, what: str) -> int:
    """A number `encode_count` wrote (BitstreamError naming `what` where the words cannot hold one)."""
    try:
        length = int(decoder.decode(_LENGTHS))
        if not 1 <= length <= MAX_COUNT_BITS:
            raise BitstreamError(f"{what} has an invalid length {length}: it is corrupt")
        value = 1
        for width in _widths(length - 1):
            value = (value << width) | int(decoder.decode(constriction.stream.model.Uniform(1 << width)))
    except (RuntimeError, ValueError, AssertionError) as err:
        raise BitstreamError(f"{what} is corrupt: the range decoder failed ({err})") from err
    return value - 1


def encode_signed(encoder: RangeEncoder, d: int) -> float:
    """Code a signed integer (|d| < 2^31) by its zig-zag number; returns its bits."""
    return encode_count(encoder, 2 * d if d >= 0 else -2 * d - 1)


def decode_signed(decoder: RangeDecoder, what: str) -> int:
    """A signed integer `encode_signed` wrote."""
    n = decode_count(decoder, what)
    return n // 2 if n % 2 == 0 else -(n + 1) // 2


def _laplace(bound: int) -> constriction.stream.model.QuantizedLaplace:
    return constriction.stream.model.QuantizedLaplace(-bound, bound)


def encode_laplace(encoder: RangeEncoder, values: np.ndarray, scale: float, bound: int) -> None:
    """Code integers in [-bound, bound] under a Laplace of mean 0 and `scale`, discretised to the integers."""
    if np.abs(values).max(initial=0) > bound:
        raise ValueError(f"a value beyond +-{bound} cannot be coded")
    n = len(values)
    encoder.encode(values.astype(np.int32), _laplace(bound), np.zeros(n), np.full(n, scale))


def decode_laplace(decoder: RangeDecoder, count: int, scale: float, bound: int, what: str) -> np.ndarray:
    """`count` integers `encode_laplace` wrote (int64), checked to end where the words do."""
    try:
        values = decoder.decode(_laplace(bound), np.zeros(count), np.full(count, scale)).astype(np.int64)
    except (RuntimeError, ValueError, AssertionError) as err:
        raise BitstreamError(f"{what} is corrupt: the range decoder failed ({err})") from err
    check_exhausted(decoder, what)
    return values


__all__ = ["RangeDecoder", "RangeEncoder", "check_exhausted", "decode_count", "decode_laplace", "decode_signed",
           "encode_count", "encode_laplace", "encode_signed", "finish", "new_decoder", "new_encoder"]
