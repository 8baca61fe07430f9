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
