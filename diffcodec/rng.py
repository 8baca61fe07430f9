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
