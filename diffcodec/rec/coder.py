"""One diffusion step sent by chunked shared-seed REC (ordered random coding / Poisson functional representation).

Both sides split the step's n elements (flat order) into chunks from the decoder-predictable cost
`expected_bits` times a factor f the encoder sends (f = fraction x the step's KL / its expected bits: at fraction 1
the budgets match the real KL on average; below 1 each chunk carries more KL than its budget); greedy: a chunk closes before it would exceed `target_bits`, or at MAX_CHUNK_ELEMENTS; and give
chunk c the budget b_c = ceil(its expected bits) in [1, target_bits] and 2^(b_c + margin) candidates z_j ~ p,
drawn from the uniforms of rng.chunk_generator(seed, REC_CANDIDATES, step, c): at 16 bits (four uniforms to a raw
64-bit draw, the midpoints of 2^16 bins: what the encoder writes) or at 64 (one draw each: the first files). The encoder picks
j* = argmin_j (log T_j - beta log w_j), T_j the arrival times of a unit Poisson process, w_j = q(z_j) / p(z_j) and
beta the sharpening (an encoder choice): beta = 1 is the Poisson functional representation, whose pick is distributed
as q once a chunk has far more than 2^KL candidates; with 2^(b + margin) it leans toward p (the log w of a Gaussian
chunk of KL b bits spreads over several bits either side of b), and beta > 1 offsets that lean;
the indices are entropy-coded (entropy/index.py). The decoder skips to row j* of the same uniforms and rebuilds
the candidate; the encoder keeps that row's uniforms from its search, and both sides turn uniforms into z_s by the
one function `_sample`, so they hold bit-identical values.
The encoder's work is at most 2^(target_bits + margin) candidates per chunk: a lone element of KL above
target_bits gets that many, and its sample is then only approximately from q (the file stays decodable and its
last rung exact).
An encoder may skip chunks (`escape`: those whose KL is over escape x (b_c + margin) bits, out of their candidates'
reach, where the prior is far too sure); the caller sends their elements another way (steps.RecCoder: by UQ, in a
side payload) and `with_skips` records which they are; both sides leave them NaN in z_s.

Payload: u8 posterior family (FAMILY_IDS, plus NARROW_DRAWS for 16-bit uniforms, plus SKIPS when chunks were
skipped), u8 target_bits, u8 margin, u16 f * 256 (little-endian), in the power layout (chunk coder `rec-power`) a u8
alpha, then with SKIPS the skipped chunks and the side payload (`with_skips`), then the index words (u32
little-endian), coded under the flat pmf (the first layout, chunk coder `rec`) or the power pmf of exponent
alpha / 64 (entropy/index.py).

Several parts of one chunk (the 12 parts of a grouped step, step_context.py) can share one range coder instead
(`PartWriter`, `PartReader`; chunk coders `rec-stream` and `rec-stream-wide`): one prefix for all, then per part its
factor, alpha and skipped chunks coded as small numbers (entropy/shared.py) before its indices, and one flush at the
end; in `rec-stream-wide` a part that skips chunks also sends how much wider the prior of their UQ symbols is
(steps.RecCoder).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffcodec import rng
from diffcodec.bitstream import pack_varints, read_varint
from diffcodec.entropy import WINDOW_SCALES
from diffcodec.entropy.index import (ALPHA_CHOICES, best_alpha, decode_indices, decode_indices_from, encode_indices,
                                     encode_indices_into, index_bits)
from diffcodec.entropy.shared import (check_exhausted, decode_count, decode_signed, encode_count, encode_signed, finish,
                                      new_decoder, new_encoder)
from diffcodec.errors import BadInputError, BitstreamError
from diffcodec.rec import native
from diffcodec.rec.family import DRAWS, StepPrior, candidates, check_family, expected_bits, kl_bits
from diffcodec.rec.score import GaussianScreen, score

TARGET_BITS = 10
MARGIN = 2
MAX_TARGET_BITS = 16
MAX_MARGIN = 4  # a chunk's index table has at most 2^(16 + 4) entries
MAX_CHUNK_ELEMENTS = 4096
MAX_FRACTION = 4.0
MAX_SHARPEN = 8.0
MAX_ESCAPE = 64.0
MAX_WIDENING = 32  # a `rec-stream-wide` part's widening of its escapes' prior, in quarter octaves (steps.widened)
FAMILY_IDS = {"uniform": 1, "gaussian": 2}
"""Posterior family -> the id in a REC payload's first byte (stable ids)."""
_FAMILY_NAMES = {i: name for name, i in FAMILY_IDS.items()}
NARROW_DRAWS = 0x80
"""Added to the family id when the candidates' uniforms are drawn at 16 bits (else at 64)."""
SKIPS = 0x40
"""Added to the family id when the encoder skipped chunks: their ids and a side payload follow the prefix
(`with_skips`; the `rec-escape` layout)."""
_PREFIX = struct.Struct("<BBBH")
_FACTOR_UNITS = 256  # f is sent in 1/256 steps
_COST_UNITS = 256  # expected bits are rounded to 1/256 bit before the greedy split: integer sums are exact
_BLOCK_VALUES = 1 << 22  # uniforms per candidate block: bounds the encoder's memory
SHORTLIST = 8  # screened candidates of a block that are scored exactly
_BATCH_VALUES = 1 << 18  # draws of a batch of small chunks searched side by side by numpy (bounds its memory)
_KERNEL_BATCH_VALUES = 1 << 24  # the same for the kernel, which keeps no draws: fewer, larger calls
SEARCH_WORKERS = 2  # threads of the encoder's candidate search


@dataclass(frozen=True)
class RecHead:
    """What a REC step's decoder reads before its indices (its payload's prefix)."""

    family: str
    target_bits: int
    margin: int
    factor: int  # f in 1/256 (`_factor`)
    alpha: int | None  # the power pmf's exponent in 1/64 (None: the flat pmf of the first layout)
    draw_bits: int  # the candidates' uniforms: 16 or 64 bits

    def family_byte(self) -> int:
        """The payload's first byte: the family id, plus NARROW_DRAWS for 16-bit uniforms."""
        return FAMILY_IDS[self.family] + (NARROW_DRAWS if self.draw_bits == 16 else 0)

    def prefix(self) -> bytes:
        """The payload's prefix: family byte, target bits, margin, factor, and alpha in the power layout."""
        return (_PREFIX.pack(self.family_byte(), self.target_bits, self.margin, self.factor)
                + (b"" if self.alpha is None else bytes([self.alpha])))


@dataclass(frozen=True)
class RecStep:
    """What encoding one step by REC produced: `payload` is its standalone chunk payload (coded only when asked for:
    a step sent with other parts in one range coder goes through `PartWriter` instead)."""

    head: RecHead
    indices: np.ndarray  # (c,) int64: the index j* of each chunk sent (ascending chunk id)
    budgets: np.ndarray  # (c,) int64: those chunks' budgets b_c
    bits: float  # information content of the indices (plus the 5 prefix bytes' 40 bits)
    z_s: Tensor  # (n,) float64: the decoder's sample; NaN in the skipped chunks
    chunks: int
    expected_bits: float  # the decoder-predicted KL of the step (sum of expected_bits, before the factor f)
    kl_bits: float  # KL(q || p) of the chunks sent by REC
    skipped: np.ndarray  # (k,) int64: the chunks left out (ascending), whose elements are NaN in z_s

    @functools.cached_property
    def payload(self) -> bytes:
        """The prefix, then the index words (the `rec` or `rec-power` layout)."""
        return self.head.prefix() + encode_indices(self.indices, self.budgets, self.head.margin, self.head.alpha)[0]


def check_fraction(fraction: float) -> None:
    """BadInputError unless 0 < fraction <= MAX_FRACTION."""
    if isinstance(fraction, bool) or not (isinstance(fraction, (int, float)) and 0.0 < fraction <= MAX_FRACTION):
        raise BadInputError(f"REC needs 0 < rec_fraction <= {MAX_FRACTION:g}, got {fraction!r}")


def check_sharpen(sharpen: float) -> None:
    """BadInputError unless 1 <= sharpen <= MAX_SHARPEN."""
    if isinstance(sharpen, bool) or not (isinstance(sharpen, (int, float)) and 1.0 <= sharpen <= MAX_SHARPEN):
        raise BadInputError(f"REC needs 1 <= rec_sharpen <= {MAX_SHARPEN:g}, got {sharpen!r}")


def check_escape(escape: float | None) -> None:
    """BadInputError unless escape is None (skip no chunk) or 0 < escape <= MAX_ESCAPE."""
    if escape is not None and (isinstance(escape, bool) or not (isinstance(escape, (int, float))
                                                                and 0.0 < escape <= MAX_ESCAPE)):
        raise BadInputError(f"REC needs 0 < rec_escape <= {MAX_ESCAPE:g} (or none), got {escape!r}")


def check_draw_bits(bits: int) -> None:
    """BadInputError unless `bits` is one of rng.DRAW_BITS."""
    if bits not in rng.DRAW_BITS:
        raise BadInputError(f"REC draws its candidates' uniforms at {' or '.join(map(str, rng.DRAW_BITS))} bits, got {bits!r}")


def check_budget(target_bits: int, margin: int) -> None:
    """BadInputError unless 1 <= target_bits <= MAX_TARGET_BITS and 0 <= margin <= MAX_MARGIN."""
    if not 1 <= target_bits <= MAX_TARGET_BITS or not 0 <= margin <= MAX_MARGIN:
        raise BadInputError(f"REC needs 1 <= target_bits (rec_bits) <= {MAX_TARGET_BITS} and 0 <= margin "
                            f"(rec_margin) <= {MAX_MARGIN}, got {target_bits} and {margin}")


def plan(family: str, p: StepPrior, target_bits: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk boundaries `starts` (c + 1,) and budgets `bits` (c,) from decoder-side information and the sent
    factor f = factor / 256."""
    cost = expected_bits(family, p).numpy() * (factor / _FACTOR_UNITS)
    units = np.rint(cost * _COST_UNITS).astype(np.int64)
    starts, budgets = greedy_split(units, target_bits * _COST_UNITS)
    return starts, np.clip(-(-budgets // _COST_UNITS), 1, target_bits)


def greedy_split(units: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk boundaries (c + 1,) and costs (c,) of integer costs `units`: each chunk the longest run from its first
    element whose cost stays within `limit` (at least that element, at most MAX_CHUNK_ELEMENTS); no elements make
    one empty chunk."""
    cum = np.concatenate([[0], np.cumsum(units)])  # cum[i]: the cost of the elements before i
    n, starts = len(units), [0]
    while starts[-1] < n or len(starts) == 1:
        first = starts[-1]
        longest = int(np.searchsorted(cum, cum[first] + limit, side="right")) - 1  # the last end within the limit
        starts.append(min(max(longest, first + 1), first + MAX_CHUNK_ELEMENTS, n))
    edges = np.asarray(starts, np.int64)
    return edges, np.diff(cum[edges])


def _rows(draws: np.random.BitGenerator, count: int, d: int, m: int, bits: int) -> np.ndarray:
    """The uniforms (count, d, m) of the next `count` candidate rows of a chunk's draws, at `bits` bits."""
    raw = draws.random_raw((count, rng.draw_words(d * m, bits)))
    return rng.unit_values(raw, d * m, bits).reshape(count, d, m)


def _select(family: str, seed: int, step: int, chunk: int, p: StepPrior, mu_q: Tensor, count: int,
            device: torch.device, bits: int, sharpen: float = 1.0) -> tuple[int, np.ndarray]:
    """(j*, its uniforms (d, m)), j* = argmin_j log T_j - beta log w_j (beta = `sharpen`) over the chunk's `count`
    candidates drawn at `bits` bits, scored by `score` on `device`, in blocks of rows that bound the memory."""
    m, d = p.mu_p.shape[0], DRAWS[family]
    pd = StepPrior(p.mu_p.to(device), p.sigma_p.to(device), p.delta.to(device))
    mq = mu_q.to(device)
    draws = rng.chunk_generator(seed, rng.REC_CANDIDATES, step, chunk).bit_generator
    log_t = np.log(np.cumsum(rng.chunk_generator(seed, rng.REC_TIMES, step, chunk).standard_exponential(count)))
    block = max(1, _BLOCK_VALUES // (d * m))
    best, best_j, best_v = np.inf, 0, np.zeros((d, m))
    for first in range(0, count, block):
        v = _rows(draws, min(block, count - first), d, m, bits)
        log_w = score(family, candidates(family, pd, torch.from_numpy(v).to(device)), pd, mq).cpu().numpy()
        key = log_t[first : first + len(v)] - sharpen * log_w
        j = int(np.argmin(key))
        if first == 0 or key[j] < best:
            best, best_j, best_v = float(key[j]), first + j, v[j]
    return best_j, best_v


def _screened_batch(screen: GaussianScreen, seed: int, step: int, chunks: list[tuple[int, int, int]],
                    count: int) -> list[tuple[int, np.ndarray]]:
    """(j*, its uniforms (1, m)) of each Gaussian chunk (c, a, b) (chunk c holds elements a..b), all of `count`
    candidates drawn at 16 bits, on the CPU, side by side: by the fused kernel (`native.search`, an exact search)
    when it is available, else by numpy (`_numpy_search`)."""
    ms = [b - a for _, a, b in chunks]
    offsets = np.cumsum([0, *ms])  # chunk k's columns: offsets[k] .. offsets[k + 1] - 1
    cols = np.concatenate([np.arange(a, b) for _, a, b in chunks])  # the element of each column
    ids = [c for c, _, _ in chunks]
    # the arrival times are the encoder's own: chunk k's are column k of the stream of the batch's first chunk (for
    # a lone chunk the stream `_select` reads)
    gaps = rng.chunk_generator(seed, rng.REC_TIMES, step, ids[0]).standard_exponential((count, len(chunks)))
    found = native.search(screen, rng.chunk_streams(seed, rng.REC_CANDIDATES, step, np.asarray(ids)), cols, offsets,
                          gaps) if native.available() else None
    if found is None:
        draws = [rng.chunk_generator(seed, rng.REC_CANDIDATES, step, c).bit_generator for c in ids]
        found = _numpy_search(screen, draws, cols, offsets, np.log(np.cumsum(gaps, axis=0)))  # log T (count, chunks)
    best_j, best_raw = found
    v = rng.unit16(best_raw)
    return [(int(j), v[a : a + m][None]) for j, a, m in zip(best_j.tolist(), offsets.tolist(), ms)]


def _numpy_search(screen: GaussianScreen, draws: list[np.random.BitGenerator], cols: np.ndarray, offsets: np.ndarray,
                  log_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(j* (chunks,), the winning rows' 16-bit draws (columns,)) as in `native.search`, by numpy: in each block of
    rows `screen.rough` ranks every chunk's candidates and the SHORTLIST best are scored by `screen.exact`; the same
    j* as an exact search unless the rough error reorders the best few."""
    count, chunks = log_t.shape
    k = np.arange(chunks)
    ms = np.diff(offsets).tolist()
    owner = np.repeat(k, ms)  # the chunk of each column
    everywhere = np.arange(len(cols))
    block = max(1, _BLOCK_VALUES // len(cols))
    best, best_j, best_raw = np.full(chunks, np.inf), np.zeros(chunks, np.int64), np.zeros(len(cols), np.uint16)
    for first in range(0, count, block):
        n = min(block, count - first)
        raw = np.concatenate([rng.lanes16(d.random_raw((n, rng.draw_words(m, 16))))[:, :m] for d, m in zip(draws, ms)],
                             axis=1)  # (n, columns): each candidate's 16-bit draws
        lt = log_t[first : first + n]
        keep = (np.argpartition(lt - screen.rough(raw, cols, offsets[:-1]), SHORTLIST, axis=0)[:SHORTLIST]
                if n > SHORTLIST else np.broadcast_to(np.arange(n)[:, None], lt.shape))
        shortlist = raw[keep[:, owner], everywhere]  # row r of column e: chunk owner[e]'s r-th shortlisted row
        key = np.take_along_axis(lt, keep, axis=0) - screen.exact(shortlist, cols, offsets[:-1])
        i = np.argmin(key, axis=0)
        won = (first == 0) | (key[i, k] < best)
        best = np.where(won, key[i, k], best)
        best_j = np.where(won, first + keep[i, k], best_j)
        best_raw = np.where(won[owner], shortlist[i[owner], everywhere], best_raw)
    return best_j, best_raw


def _screened(screen: GaussianScreen, seed: int, step: int, starts: np.ndarray,
              counts: dict[int, int]) -> dict[int, tuple[int, np.ndarray]]:
    """(j*, uniforms) of each chunk c of a Gaussian step with counts[c] candidates (ascending c), on the CPU,
    drawn at 16 bits: chunks of one candidate count go in batches of
    up to _KERNEL_BATCH_VALUES draws (_BATCH_VALUES for numpy) (`_screened_batch`), the batches on SEARCH_WORKERS
    threads (the kernel's calls, and numpy's draws and table reads, release the GIL); the threads change no j*."""
    by_count: dict[int, list[tuple[int, int, int]]] = {}
    for c, n in counts.items():
        by_count.setdefault(n, []).append((c, int(starts[c]), int(starts[c + 1])))
    limit = _KERNEL_BATCH_VALUES if native.available() else _BATCH_VALUES
    batches: list[tuple[int, list[tuple[int, int, int]]]] = []  # (count, its chunks in order)
    sizes: list[int] = []  # draws of each batch
    for n, chunks in by_count.items():
        for chunk in chunks:
            draws = n * (chunk[2] - chunk[1])
            if not batches or batches[-1][0] != n or sizes[-1] + draws > limit:
                batches.append((n, []))
                sizes.append(0)
            batches[-1][1].append(chunk)
            sizes[-1] += draws
    work = np.asarray(sizes, np.float64)
    found: dict[int, tuple[int, np.ndarray]] = {}

    def run(part: range) -> None:
        for n, chunks in (batches[i] for i in part):
            for (c, _, _), hit in zip(chunks, _screened_batch(screen, seed, step, chunks, n)):
                found[c] = hit

    with ThreadPoolExecutor(SEARCH_WORKERS) as pool:
        list(pool.map(run, _balanced(work, SEARCH_WORKERS)))  # list(): raises what a worker raised
    return dict(sorted(found.items()))


def _balanced(work: np.ndarray, parts: int) -> list[range]:
    """`parts` contiguous ranges of indices into `work` with about equal sums of it."""
    cuts = np.searchsorted(np.cumsum(work), np.arange(1, parts) * work.sum() / parts).tolist()
    ends = [0, *cuts, len(work)]
    return [range(a, b) for a, b in zip(ends[:-1], ends[1:])]


def _sample(family: str, p: StepPrior, starts: np.ndarray, rows: dict[int, np.ndarray]) -> Tensor:
    """z_s (n,) from the chosen row of uniforms (d, m) of each chunk in `rows`, through `candidates` (the one
    function both sides use, so they hold bit-identical values); NaN in the chunks not in `rows`."""
    v = np.zeros((DRAWS[family], int(starts[-1])))
    for c, row in rows.items():
        v[:, starts[c] : starts[c + 1]] = row
    z_s = candidates(family, p, torch.from_numpy(v))
    for c in np.setdiff1d(np.arange(len(starts) - 1), list(rows)).tolist():
        z_s[starts[c] : starts[c + 1]] = torch.nan
    return z_s


def _regenerate(family: str, seed: int, step: int, p: StepPrior, starts: np.ndarray, indices: dict[int, int],
                bits: int) -> Tensor:
    """z_s (n,) from the chosen index j of each chunk in `indices`: row j of the chunk's shared draws at `bits` bits;
    NaN in the other chunks."""
    d = DRAWS[family]
    rows = {}
    streams = rng.chunk_streams(seed, rng.REC_CANDIDATES, step, np.fromiter(indices, np.int64, len(indices)))
    draws = None
    for (c, j), words in zip(indices.items(), streams.tolist()):
        m = int(starts[c + 1] - starts[c])
        draws = rng.stream_generator(words, draws)  # the chunk's stream (rng.chunk_generator's), one object reused
        draws.advance(j * rng.draw_words(d * m, bits))
        rows[c] = _rows(draws, 1, d, m, bits)[0]
    return _sample(family, p, starts, rows)


def _factor(kl: Tensor, expected: float, fraction: float) -> int:
    """The factor the encoder sends, in 1/256: f = fraction x the step's KL / its expected bits, in [1, 2^16 - 1]."""
    return int(np.clip(np.ceil(fraction * float(kl.sum()) / max(expected, 1e-9) * _FACTOR_UNITS), 1, 2**16 - 1))


def out_of_reach(kl_c: np.ndarray, bits: np.ndarray, margin: int, escape: float | None) -> np.ndarray:
    """The chunks (ascending int64) whose KL `kl_c` is over escape x (b_c + margin) bits: their 2^(b_c + margin)
    candidates cannot reach q, and the pick stays near the prior whatever the sharpening (an edge inside a long
    run of elements the prior is far too sure of); none for escape None."""
    if escape is None:
        return np.zeros(0, np.int64)
    return np.flatnonzero(kl_c > escape * (bits + margin))


def encode_step(family: str, seed: int, step: int, p: StepPrior, mu_q: Tensor, target_bits: int = TARGET_BITS,
                margin: int = MARGIN, device: torch.device | str = "cpu", power: bool = True,
                fraction: float = 1.0, draw_bits: int = 16, sharpen: float = 1.0,
                escape: float | None = None) -> RecStep:
    """Send q(z_s | z_t, x) (mean mu_q (n,), float64) by REC; the scoring runs on `device`. `power`: the payload's
    indices use the power pmf with the cheapest alpha (layout `rec-power`), else the flat pmf (layout `rec`).
    `fraction`: the share of the step's KL that the chunk budgets are planned for (f = fraction KL / expected);
    below 1 each chunk carries more KL than its candidates are sized for, and its pick leans toward the prior:
    fewer bits and a sample further from q. `draw_bits`: the width of the candidates' uniforms (16, or 64 as in the
    first files); 16 draws four times fewer random bits and screens by table. `sharpen`: beta of the pick
    argmin_j log T_j - beta log w_j (1: the Poisson functional representation; above 1 the pick moves from the prior
    toward q's mean; the decoder does not need it). `escape`: skip the chunks `out_of_reach` at this factor (the
    caller sends their elements and tells the decoder `skipped`)."""
    check_family(family)
    check_budget(target_bits, margin)
    check_fraction(fraction)
    check_draw_bits(draw_bits)
    check_sharpen(sharpen)
    check_escape(escape)
    kl = kl_bits(family, p, mu_q)
    expected = float(expected_bits(family, p).sum())
    factor = _factor(kl, expected, fraction)
    starts, bits = plan(family, p, target_bits, factor)
    kl_c = np.add.reduceat(kl.numpy(), starts[:-1]) if len(kl) else np.zeros(1)  # each chunk's KL in bits
    skipped = out_of_reach(kl_c, bits, margin, escape)
    device = torch.device(device)
    screen = GaussianScreen(p, mu_q, sharpen) if family == "gaussian" and device.type == "cpu" and draw_bits == 16 else None
    sent = np.setdiff1d(np.arange(len(bits)), skipped)
    counts = {c: 1 << int(bits[c] + margin) for c in sent.tolist()}
    if len(mu_q) == 0:  # no elements (an empty checkerboard group): one empty chunk, every candidate the same
        found = {0: (0, np.zeros((DRAWS[family], 0)))}
    elif screen is not None:
        found = _screened(screen, seed, step, starts, counts)
    else:
        found = {c: _select(family, seed, step, c, p.take(slice(starts[c], starts[c + 1])),
                            mu_q[starts[c] : starts[c + 1]], n, device, draw_bits, sharpen)
                 for c, n in counts.items()}
    indices = np.array([found[c][0] for c in sent.tolist()], np.int64)
    alpha = best_alpha(indices, bits[sent], margin) if power else None
    z_s = _sample(family, p, starts, {c: row for c, (_, row) in found.items()})  # what the decoder's _regenerate draws
    head = RecHead(family, target_bits, margin, factor, alpha, draw_bits)
    info = index_bits(indices, bits[sent], margin, alpha) + 8 * len(head.prefix())
    return RecStep(head, indices, bits[sent], info, z_s, len(sent), expected, float(kl_c[sent].sum()), skipped)


def with_skips(payload: bytes, power: bool, skipped: np.ndarray, side: bytes) -> bytes:
    """`encode_step`'s payload (power layout or not) for a step whose skipped chunks (ascending ids) `side` sends:
    the family byte gets SKIPS, and after the prefix come, in LEB128, the count E, the gap before each skipped chunk
    (c_1, then c_k - c_(k-1) - 1) and len(side), then side. With none skipped, the payload as it is."""
    if not len(skipped):
        return payload
    size = _PREFIX.size + power
    gaps = np.diff(skipped, prepend=-1) - 1
    head = pack_varints([len(gaps), *gaps.tolist(), len(side)])
    return bytes([payload[0] | SKIPS]) + payload[1:size] + head + side + payload[size:]


def without_skips(payload: bytes, power: bool) -> tuple[np.ndarray, bytes, bytes]:
    """(the skipped chunks, the side payload, the payload for `decode_step`) of a payload `with_skips` made; none
    skipped and no side payload where the family byte has no SKIPS."""
    size = _PREFIX.size + power
    if len(payload) < size or not payload[0] & SKIPS:
        return np.zeros(0, np.int64), b"", payload
    what = "the skipped chunks of a REC step"
    count, pos = read_varint(payload, size, what)
    if count > len(payload):
        raise BitstreamError(f"a REC step says it skips {count} chunks in {len(payload)} bytes: it is corrupt")
    gaps = []
    for _ in range(count):
        gap, pos = read_varint(payload, pos, what)
        gaps.append(gap)
    length, pos = read_varint(payload, pos, "the side payload length of a REC step")
    if pos + length > len(payload):
        raise BitstreamError("the side payload of a REC step is cut: it is corrupt")
    skipped = np.cumsum(np.asarray(gaps, np.int64) + 1) - 1
    rest = bytes([payload[0] & ~SKIPS]) + payload[1:size] + payload[pos + length :]
    return skipped, payload[pos : pos + length], rest


def read_head(payload: bytes, power: bool) -> tuple[RecHead, int]:
    """(the head, its size in bytes) of a REC step payload in the power layout (`power`) or the flat one."""
    size = _PREFIX.size + power
    if len(payload) < size:
        raise BitstreamError(f"REC step payload of {len(payload)} bytes is cut inside its {size}-byte prefix")
    family_id, target_bits, margin, factor = _PREFIX.unpack_from(payload)
    family = _check_prefix(family_id, target_bits, margin, factor)
    return RecHead(family, target_bits, margin, factor, payload[_PREFIX.size] if power else None,
                   16 if family_id & NARROW_DRAWS else 64), size


def _check_prefix(family_id: int, target_bits: int, margin: int, factor: int) -> str:
    """The family of a valid prefix (BitstreamError for an invalid one)."""
    family_id &= ~NARROW_DRAWS
    if family_id not in _FAMILY_NAMES or not 1 <= target_bits <= MAX_TARGET_BITS or margin > MAX_MARGIN \
            or not 0 < factor < 2**16:
        raise BitstreamError("REC step payload has an invalid (family, target_bits, margin, factor) prefix: it is "
                             "corrupt")
    return _FAMILY_NAMES[family_id]


def rebuild(head: RecHead, seed: int, step: int, p: StepPrior, skipped: np.ndarray | None,
            read_indices: Callable[[np.ndarray], np.ndarray]) -> Tensor:
    """The decoder's z_s (n,) float64 of a step with this head: the chunk plan, then `read_indices(budgets of the
    chunks sent)`, then their candidates; NaN in the chunks `skipped` (ascending ids the encoder left out; none if
    None)."""
    starts, bits = plan(head.family, p, head.target_bits, head.factor)
    skipped = np.zeros(0, np.int64) if skipped is None else skipped
    if len(skipped) and skipped[-1] >= len(bits):
        raise BitstreamError(f"REC step skips chunk {int(skipped[-1])} of {len(bits)}: it is corrupt")
    sent = np.setdiff1d(np.arange(len(bits)), skipped)
    indices = read_indices(bits[sent])
    return _regenerate(head.family, seed, step, p, starts, dict(zip(sent.tolist(), indices.tolist())), head.draw_bits)


def decode_step(payload: bytes, seed: int, step: int, p: StepPrior, power: bool = True,
                skipped: np.ndarray | None = None) -> Tensor:
    """The decoder's z_s (n,) float64 from a REC step payload (the family and the draws' width are read from it) in
    the power layout (`power`) or the flat one; NaN in the chunks `skipped` (ascending ids the encoder left out; none
    if None)."""
    head, size = read_head(payload, power)
    return rebuild(head, seed, step, p, skipped,
                   lambda budgets: decode_indices(payload[size:], budgets, head.margin, head.alpha))


_STREAM_PREFIX = struct.Struct("<BBBB")  # family byte, target bits, margin, the window rule of the escapes' UQ


class PartWriter:
    """The REC parts of one chunk in one range coder (entropy/shared.py): per part its factor and alpha as
    differences from the part before (the first from f = 1 and the smallest alpha choice), its skipped chunks (their
    count, then the gap before each), with `wide` (the `rec-stream-wide` layout) and skipped chunks the widening of
    their prior, then its indices; the caller codes a part's escaped elements into `encoder` right after them.
    `finish` gives the chunk's bytes: the prefix the parts share (family byte, target bits, margin, window rule), then
    the words."""

    PREFIX_SIZE = _STREAM_PREFIX.size

    def __init__(self, wide: bool = False) -> None:
        self.wide = wide
        self.encoder = new_encoder()
        self.head: RecHead | None = None
        self.factor, self.alpha = _FACTOR_UNITS, ALPHA_CHOICES[0]

    def write(self, sent: RecStep, widening: int = 0) -> float:
        """Code one part's head, skipped chunks (and, `wide`, the widening of their prior) and indices; returns their
        information content in bits."""
        head = sent.head
        if head.alpha is None:
            raise ValueError("REC parts in one range coder use the power pmf")
        if self.head is not None and (head.family, head.target_bits, head.margin, head.draw_bits) != \
                (self.head.family, self.head.target_bits, self.head.margin, self.head.draw_bits):
            raise ValueError("the parts of a REC step differ in family, target bits, margin or draws")
        self.head = self.head or head
        bits = encode_signed(self.encoder, head.factor - self.factor)
        bits += encode_signed(self.encoder, head.alpha - self.alpha)
        self.factor, self.alpha = head.factor, head.alpha
        gaps = np.diff(sent.skipped, prepend=-1) - 1
        bits += sum(encode_count(self.encoder, int(n)) for n in [len(gaps), *gaps.tolist()])
        if self.wide and len(gaps):
            if not 0 <= widening <= MAX_WIDENING:
                raise ValueError(f"a part widens its escapes' prior by 0 to {MAX_WIDENING} steps, not {widening}")
            bits += encode_count(self.encoder, widening)
        return bits + encode_indices_into(self.encoder, sent.indices, sent.budgets, head.margin, head.alpha)

    def finish(self) -> bytes:
        """The shared prefix and the coder's words (ValueError if no part was written)."""
        if self.head is None:
            raise ValueError("no REC part was written")
        h = self.head
        return _STREAM_PREFIX.pack(h.family_byte(), h.target_bits, h.margin, WINDOW_SCALES) + finish(self.encoder)


class PartReader:
    """Reads what a `PartWriter` (of the same `wide`) wrote, part by part; `decoder` is where the caller reads a part's
    escaped elements (with the window rule `window_scales`)."""

    WHAT = "the range coder of a grouped REC step chunk"

    def __init__(self, data: bytes, wide: bool = False) -> None:
        self.wide = wide
        if len(data) < _STREAM_PREFIX.size:
            raise BitstreamError(f"{self.WHAT} is cut inside its {_STREAM_PREFIX.size}-byte prefix")
        family_id, self.target_bits, self.margin, self.window_scales = _STREAM_PREFIX.unpack_from(data)
        self.family = _check_prefix(family_id, self.target_bits, self.margin, _FACTOR_UNITS)
        self.draw_bits = 16 if family_id & NARROW_DRAWS else 64
        if self.window_scales == 0:
            raise BitstreamError(f"{self.WHAT} has window rule 0: it is corrupt")
        self.decoder = new_decoder(data[_STREAM_PREFIX.size :], self.WHAT)
        self.factor, self.alpha = _FACTOR_UNITS, ALPHA_CHOICES[0]

    def read(self, seed: int, step: int, p: StepPrior) -> tuple[Tensor, np.ndarray, int]:
        """(z_s (n,) float64, NaN in the skipped chunks; those chunks' ids; the widening of their prior, 0 where the
        layout has none) of the next part."""
        self.factor += decode_signed(self.decoder, self.WHAT)
        self.alpha += decode_signed(self.decoder, self.WHAT)
        if not 0 < self.factor < 2**16 or not 0 <= self.alpha < 256:
            raise BitstreamError(f"{self.WHAT} holds an invalid factor or alpha: it is corrupt")
        count = decode_count(self.decoder, self.WHAT)
        if count > max(len(p.mu_p), 1):  # every chunk holds an element
            raise BitstreamError(f"{self.WHAT} skips {count} chunks of a part of {len(p.mu_p)} elements: it is corrupt")
        gaps = np.array([decode_count(self.decoder, self.WHAT) for _ in range(count)], np.int64)
        skipped = np.cumsum(gaps + 1) - 1
        widening = decode_count(self.decoder, self.WHAT) if self.wide and count else 0
        if widening > MAX_WIDENING:
            raise BitstreamError(f"{self.WHAT} widens a prior by {widening} > {MAX_WIDENING} steps: it is corrupt")
        head = RecHead(self.family, self.target_bits, self.margin, self.factor, self.alpha, self.draw_bits)
        z_s = rebuild(head, seed, step, p, skipped,
                      lambda budgets: decode_indices_from(self.decoder, budgets, head.margin, head.alpha))
        return z_s, skipped, widening

    def finish(self) -> None:
        """BitstreamError unless the words end where the last part does."""
        check_exhausted(self.decoder, self.WHAT)
