"""One diffusion step sent by chunked shared-seed REC (ordered random coding / Poisson functional representation).

Both sides split the step's n elements (flat order) into chunks from the decoder-predictable cost
`expected_bits` times a factor f the encoder sends (f = the step's KL / its expected bits, so budgets match the
real KL on average); greedy: a chunk closes before it would exceed `target_bits`, or at MAX_CHUNK_ELEMENTS; and give
chunk c the budget b_c = ceil(its expected bits) in [1, target_bits] and 2^(b_c + margin) candidates z_j ~ p,
drawn from the uniforms of rng.chunk_generator(seed, REC_CANDIDATES, step, c). The encoder picks
j* = argmin_j (log T_j - log w_j), T_j the arrival times of a unit Poisson process and w_j = q(z_j) / p(z_j);
the indices are entropy-coded (entropy/index.py). The decoder skips to row j* of the same uniforms and rebuilds
the candidate. Both sides build z_s by the one function `_regenerate`, so they hold bit-identical values.
The encoder's work is at most 2^(target_bits + margin) candidates per chunk: a lone element of KL above
target_bits gets that many, and its sample is then only approximately from q (the file stays decodable and its
last rung exact).

Payload: u8 posterior family (FAMILY_IDS), u8 target_bits, u8 margin, u16 f * 256 (little-endian), in the power
layout (chunk coder `rec-power`) a u8 alpha, then the index words (u32 little-endian), coded under the flat pmf (the
first layout, chunk coder `rec`) or the power pmf of exponent alpha / 64 (entropy/index.py).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffcodec import rng
from diffcodec.entropy.index import best_alpha, decode_indices, encode_indices
from diffcodec.errors import BadInputError, BitstreamError
from diffcodec.rec.family import DRAWS, StepPrior, candidates, check_family, expected_bits, kl_bits
from diffcodec.rec.score import GaussianScreen, score

TARGET_BITS = 10
MARGIN = 2
MAX_TARGET_BITS = 16
MAX_MARGIN = 4  # a chunk's index table has at most 2^(16 + 4) entries
MAX_CHUNK_ELEMENTS = 4096
FAMILY_IDS = {"uniform": 1, "gaussian": 2}
"""Posterior family -> the id in a REC payload's first byte (stable ids)."""
_FAMILY_NAMES = {i: name for name, i in FAMILY_IDS.items()}
_PREFIX = struct.Struct("<BBBH")
_FACTOR_UNITS = 256  # f is sent in 1/256 steps
_COST_UNITS = 256  # expected bits are rounded to 1/256 bit before the greedy split: integer sums are exact
_BLOCK_VALUES = 1 << 22  # uniforms per candidate block: bounds the encoder's memory
SHORTLIST = 8  # screened candidates of a block that are scored exactly


@dataclass(frozen=True)
class RecStep:
    """What encoding one step by REC produced."""

    payload: bytes
    bits: float  # information content of the indices (plus the 5 prefix bytes' 40 bits)
    z_s: Tensor  # (n,) float64: the decoder's sample
    chunks: int
    expected_bits: float  # the decoder-predicted KL of the step (sum of expected_bits, before the factor f)
    kl_bits: float  # the step's KL(q || p)


def check_budget(target_bits: int, margin: int) -> None:
    """BadInputError unless 1 <= target_bits <= MAX_TARGET_BITS and 0 <= margin <= MAX_MARGIN."""
    if not 1 <= target_bits <= MAX_TARGET_BITS or not 0 <= margin <= MAX_MARGIN:
        raise BadInputError(f"REC needs 1 <= target_bits (rec_bits) <= {MAX_TARGET_BITS} and 0 <= margin "
                            f"(rec_margin) <= {MAX_MARGIN}, got {target_bits} and {margin}")


def plan(family: str, p: StepPrior, target_bits: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk boundaries `starts` (c + 1,) and budgets `bits` (c,) from decoder-side information and the sent
    factor f = factor / 256."""
    cost = expected_bits(family, p).numpy() * (factor / _FACTOR_UNITS)
    units = np.rint(cost * _COST_UNITS).astype(np.int64).tolist()
    limit = target_bits * _COST_UNITS
    starts, budgets, total, first = [0], [], 0, 0
    for i, u in enumerate(units):
        if i > first and (total + u > limit or i - first == MAX_CHUNK_ELEMENTS):
            starts.append(i)
            budgets.append(total)
            total, first = 0, i
        total += u
    starts.append(len(units))
    budgets.append(total)
    bits = np.clip(-(-np.asarray(budgets, np.int64) // _COST_UNITS), 1, target_bits)
    return np.asarray(starts, np.int64), bits


def _select(family: str, seed: int, step: int, chunk: int, p: StepPrior, mu_q: Tensor, count: int,
            device: torch.device) -> int:
    """j* = argmin_j log T_j - log w_j over the chunk's `count` candidates, scored by `score` on `device`."""
    m, d = p.mu_p.shape[0], DRAWS[family]
    pd = StepPrior(p.mu_p.to(device), p.sigma_p.to(device), p.delta.to(device))
    mq = mu_q.to(device)

    def log_w(raw: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(rng.unit_doubles(raw)).to(device)
        return score(family, candidates(family, pd, v), pd, mq).cpu().numpy()

    return _search(seed, step, chunk, count, (d, m), log_w)


def _select_screened(screen: GaussianScreen, seed: int, step: int, chunk: int, a: int, b: int, count: int) -> int:
    """j* for the Gaussian chunk of elements a..b on the CPU: `screen.rough` ranks each block, the SHORTLIST best
    are scored by `screen.exact`; the same j* as `_select` unless the rough error reorders the best few."""
    return _search(seed, step, chunk, count, (1, b - a), lambda raw: screen.exact(raw[:, 0], a, b),
                   lambda raw: screen.rough(raw[:, 0], a, b))


def _search(seed: int, step: int, chunk: int, count: int, shape: tuple[int, int],
            log_w: Callable[[np.ndarray], np.ndarray],
            rough_log_w: Callable[[np.ndarray], np.ndarray] | None = None) -> int:
    """argmin_j log T_j - log w_j over the chunk's candidates, from their raw draws (rows of `shape`) in blocks
    that bound the memory; with `rough_log_w`, only the SHORTLIST best of a block by it go to `log_w`."""
    draws = rng.chunk_generator(seed, rng.REC_CANDIDATES, step, chunk)
    log_t = np.log(np.cumsum(rng.chunk_generator(seed, rng.REC_TIMES, step, chunk).standard_exponential(count)))
    block = max(1, _BLOCK_VALUES // (shape[0] * shape[1]))
    best, best_j = np.inf, 0
    for first in range(0, count, block):
        raw = draws.bit_generator.random_raw((min(block, count - first), *shape))
        rows = np.arange(first, first + len(raw))
        if rough_log_w is not None and len(rows) > SHORTLIST:
            keep = np.argpartition(log_t[rows] - rough_log_w(raw), SHORTLIST)[:SHORTLIST]
            raw, rows = raw[keep], rows[keep]
        key = log_t[rows] - log_w(raw)
        j = int(np.argmin(key))
        if key[j] < best:
            best, best_j = float(key[j]), int(rows[j])
    return best_j


def _regenerate(family: str, seed: int, step: int, p: StepPrior, starts: np.ndarray, indices: np.ndarray) -> Tensor:
    """z_s (n,) from each chunk's chosen index: row j of the chunk's shared uniforms, through `candidates`."""
    d = DRAWS[family]
    rows = []
    for c, j in enumerate(indices.tolist()):
        m = int(starts[c + 1] - starts[c])
        uniforms = rng.chunk_generator(seed, rng.REC_CANDIDATES, step, c)
        uniforms.bit_generator.advance(j * d * m)
        rows.append(uniforms.random((d, m)))
    v = torch.from_numpy(np.concatenate(rows, axis=1)) if rows else torch.zeros(d, 0, dtype=torch.float64)
    return candidates(family, p, v)


def encode_step(family: str, seed: int, step: int, p: StepPrior, mu_q: Tensor, target_bits: int = TARGET_BITS,
                margin: int = MARGIN, device: torch.device | str = "cpu", power: bool = True) -> RecStep:
    """Send q(z_s | z_t, x) (mean mu_q (n,), float64) by REC; the scoring runs on `device`. `power`: the payload's
    indices use the power pmf with the cheapest alpha (layout `rec-power`), else the flat pmf (layout `rec`)."""
    check_family(family)
    check_budget(target_bits, margin)
    kl = kl_bits(family, p, mu_q)
    expected = float(expected_bits(family, p).sum())
    factor = int(np.clip(np.ceil(float(kl.sum()) / max(expected, 1e-9) * _FACTOR_UNITS), 1, 2**16 - 1))
    starts, bits = plan(family, p, target_bits, factor)
    device = torch.device(device)
    screen = GaussianScreen(p, mu_q) if family == "gaussian" and device.type == "cpu" else None
    counts = [1 << int(b + margin) for b in bits]
    spans = list(zip(starts[:-1].tolist(), starts[1:].tolist()))
    indices = np.array([
        _select_screened(screen, seed, step, c, a, b, n) if screen is not None
        else _select(family, seed, step, c, p.take(slice(a, b)), mu_q[a:b], n, device)
        for c, ((a, b), n) in enumerate(zip(spans, counts))
    ], np.int64)
    alpha = best_alpha(indices, bits, margin) if power else None
    words, info = encode_indices(indices, bits, margin, alpha)
    z_s = _regenerate(family, seed, step, p, starts, indices)
    prefix = _PREFIX.pack(FAMILY_IDS[family], target_bits, margin, factor) + (b"" if alpha is None else bytes([alpha]))
    return RecStep(prefix + words, info + 8 * len(prefix), z_s, len(indices), expected, float(kl.sum()))


def decode_step(payload: bytes, seed: int, step: int, p: StepPrior, power: bool = True) -> Tensor:
    """The decoder's z_s (n,) float64 from a REC step payload (the family is read from the payload) in the power
    layout (`power`) or the flat one."""
    size = _PREFIX.size + power
    if len(payload) < size:
        raise BitstreamError(f"REC step payload of {len(payload)} bytes is cut inside its {size}-byte prefix")
    family_id, target_bits, margin, factor = _PREFIX.unpack_from(payload)
    alpha = payload[_PREFIX.size] if power else None
    if family_id not in _FAMILY_NAMES or not 1 <= target_bits <= MAX_TARGET_BITS or margin > MAX_MARGIN \
            or factor == 0:
        raise BitstreamError("REC step payload has an invalid (family, target_bits, margin, factor) prefix: it is corrupt")
    family = _FAMILY_NAMES[family_id]
    starts, bits = plan(family, p, target_bits, factor)
    indices = decode_indices(payload[size:], bits, margin, alpha)
    return _regenerate(family, seed, step, p, starts, indices)
