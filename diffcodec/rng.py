"""Seeded, device-independent randomness shared by encoder and decoder.

Every draw is made on the CPU by numpy's PCG64 from a SeedSequence of (seed, purpose, step),
so the same file decodes to the same numbers on any machine; the result is then moved to the
model's device.
"""

from __future__ import annotations

import numpy as np
import torch

# Purposes keep the streams of one (seed, step) apart.
DITHER = 1
TOP_NOISE = 2
ANCESTRAL = 3
REC_CANDIDATES = 4  # shared: the uniforms behind each REC chunk's candidates
REC_TIMES = 5  # encoder only: the arrival times of the Poisson functional representation


def _generator(seed: int, purpose: int, step: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose, step])))


def chunk_generator(seed: int, purpose: int, step: int, chunk: int) -> np.random.Generator:
    """The generator of one REC chunk: PCG64 from SeedSequence([seed, purpose, step, chunk]).

    Its `random()` doubles use one 64-bit draw each, so `bit_generator.advance(k)` skips exactly k of them.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, purpose, step, chunk])))


def part_step(step: int, part: int) -> int:
    """The stream id of part `part` (< 16) of step `step` of a grouped step (step_context.py): 2^20 + 16 step + part,
    apart from every plain step's id."""
    return (1 << 20) + 16 * step + part


def unit_doubles(raw: np.ndarray) -> np.ndarray:
    """The doubles in [0, 1) that `Generator.random()` makes of raw 64-bit PCG64 draws: (r >> 11) 2^-53."""
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53


DRAW_BITS = (64, 16)
"""The widths of a REC candidate's uniforms: 64 (one raw draw each, `unit_doubles`) or 16 (four to a raw draw)."""


def draw_words(values: int, bits: int) -> int:
    """The raw 64-bit draws behind `values` uniforms of `bits` bits: one each at 64 bits, ceil(values / 4) at 16."""
    return values if bits == 64 else -(-values // 4)


def lanes16(raw: np.ndarray) -> np.ndarray:
    """The four 16-bit lanes of each raw draw, least significant first: (..., w) uint64 -> (..., 4 w) uint16."""
    return raw.astype("<u8", copy=False).view("<u2")


def unit16(lanes: np.ndarray) -> np.ndarray:
    """The uniforms of 16-bit draws k: the midpoints (k + 1/2) 2^-16 of 2^16 equal bins of [0, 1), float64."""
    return (lanes.astype(np.float64) + 0.5) * 2.0**-16


def unit_values(raw: np.ndarray, values: int, bits: int) -> np.ndarray:
    """The first `values` uniforms of rows of raw draws (..., draw_words(values, bits)) -> (..., values) float64."""
    return unit_doubles(raw) if bits == 64 else unit16(lanes16(raw)[..., :values])


def uniform(seed: int, purpose: int, step: int, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """v ~ U[0, 1)^shape (float32) for the given purpose and step."""
    v = _generator(seed, purpose, step).random(int(np.prod(shape)), dtype=np.float32)
    return torch.from_numpy(v.reshape(shape)).to(device)


def dither(seed: int, step: int, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """u ~ U(-1/2, 1/2)^shape for step `step` (float32)."""
    return uniform(seed, DITHER, step, shape, device) - 0.5


def normal(seed: int, purpose: int, step: int, shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """eps ~ N(0, I)^shape (float32) for the given purpose and step."""
    eps = _generator(seed, purpose, step).standard_normal(int(np.prod(shape)), dtype=np.float32)
    return torch.from_numpy(eps.reshape(shape)).to(device)


_POOL_SIZE = 4  # numpy's SeedSequence: pool words and hash constants (numpy/random/bit_generator.pyx)
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_PCG_MULT = (0x2360ED051FC65DA4 << 64) | 0x4385DF649FCCF645
_MASK64 = (1 << 64) - 1


def _words32(n: int) -> list[int]:
    """A non-negative int as SeedSequence reads it: its 32-bit words, least significant first ([0] for 0)."""
    words = [n & 0xFFFFFFFF]
    while n >> 32:
        n >>= 32
        words.append(n & 0xFFFFFFFF)
    return words


def chunk_streams(seed: int, purpose: int, step: int, chunks: np.ndarray) -> np.ndarray:
    """The PCG64 streams of `chunk_generator(seed, purpose, step, c)` for every c of `chunks` (ints < 2^32), side by
    side: (len(chunks), 4) uint64 words, state high and low, increment high and low (what `Generator.bit_generator
    .state` holds). numpy's SeedSequence hash and PCG64 seeding, vectorised over the last entropy word."""
    u32 = np.uint32
    columns = [np.full(len(chunks), w, u32) for w in _words32(seed) + _words32(purpose) + _words32(step)]
    entropy = [*columns, np.asarray(chunks, np.int64).astype(u32)]
    hash_a = [_INIT_A]

    def hashmix(value: np.ndarray) -> np.ndarray:  # value ^= h; h *= MULT_A; value *= h; value ^= value >> 16
        value = value ^ u32(hash_a[0])
        hash_a[0] = hash_a[0] * _MULT_A & 0xFFFFFFFF
        value = value * u32(hash_a[0])
        return value ^ (value >> u32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # (L x - R y) ^ (that >> 16)
        r = x * u32(_MIX_MULT_L) - y * u32(_MIX_MULT_R)
        return r ^ (r >> u32(16))

    with np.errstate(over="ignore"):
        pool = [hashmix(entropy[i]) for i in range(_POOL_SIZE)]  # the entropy has at least four words
        for src in range(_POOL_SIZE):
            for dst in range(_POOL_SIZE):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        for extra in entropy[_POOL_SIZE:]:
            for dst in range(_POOL_SIZE):
                pool[dst] = mix(pool[dst], hashmix(extra))
        words, hash_b = [], _INIT_B  # generate_state(4, uint64): eight 32-bit words from the pool in turn
        for i in range(8):
            value = pool[i % _POOL_SIZE] ^ u32(hash_b)
            hash_b = hash_b * _MULT_B & 0xFFFFFFFF
            value = value * u32(hash_b)
            words.append((value ^ (value >> u32(16))).astype(np.uint64))
    s = [words[2 * i] | (words[2 * i + 1] << np.uint64(32)) for i in range(4)]  # little-endian pairs
    out = np.empty((len(chunks), 4), np.uint64)
    for row, (s0, s1, s2, s3) in enumerate(zip(*(w.tolist() for w in s))):
        init_state, inc = (s0 << 64) | s1, ((((s2 << 64) | s3) << 1) | 1) & ((1 << 128) - 1)
        state = ((inc + init_state) * _PCG_MULT + inc) & ((1 << 128) - 1)  # srandom: 0 -> step, + init, step
        out[row] = (state >> 64, state & _MASK64, inc >> 64, inc & _MASK64)
    return out


def stream_generator(words: list[int], bit_generator: np.random.PCG64 | None = None) -> np.random.PCG64:
    """A PCG64 at the stream of `chunk_streams` words (state high, low, increment high, low): `bit_generator` moved
    there (a new one if None)."""
    bit_generator = np.random.PCG64() if bit_generator is None else bit_generator
    bit_generator.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                           "state": {"state": (words[0] << 64) | words[1], "inc": (words[2] << 64) | words[3]}}
    return bit_generator
