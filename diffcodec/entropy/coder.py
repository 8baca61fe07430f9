"""The constriction range coder over the tables of `tables.py`: symbols <-> payload bytes.

Payload layout:
    u8          c, the window rule: symbol i is coded in a window of half-width
                W_i = symbol_windows(scale, c, lo, hi)[i] = clamp(ceil(c * scale_i), 1, widest)
    u32le * w   the range coder's compressed words
Symbols are coded group by group, groups of equal W_i in increasing W_i, each group in its original
order (a stable argsort of W_i) and cut into batches of at most TABLE_ENTRIES // (2 W_i + 2) symbols.
Per batch the stream holds the batch's table columns (Categorical rows = our integer frequencies),
then, for each escaped symbol in order, its offset k - base as a 32-bit two's complement integer in
two Uniform(2**16) symbols (high half first).

Tables are built where the model lives (`table_builder`): by the Triton kernel when mean and scale are on
CUDA and triton imports, else by the CPU `rate_table`; either way constriction codes on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

import constriction

from diffcodec.determinism import one_thread
from diffcodec.entropy.shared import finish, new_encoder
from diffcodec.entropy.tables import ESCAPE_BITS, WINDOW_SCALES, RateTable, rate_table, symbol_windows
from diffcodec.errors import BadInputError, BitstreamError

TABLE_ENTRIES = 1 << 18  # table entries per batch: float64 temporaries of 2 MiB stay in cache
_HALF_BITS = ESCAPE_BITS // 2
_HALF_MASK = (1 << _HALF_BITS) - 1
_OFFSET_MIN, _OFFSET_MAX = -(1 << (ESCAPE_BITS - 1)), (1 << (ESCAPE_BITS - 1)) - 1
# perfect=True is ~100x slower. The lazy Categorical maps weights p (sum S, m columns) to
# F_j = floor(sum_{i<j} p_i * (2**24 - m) / S) + j; the weights RateTable.rows = freq - 1 (integers < 2**24,
# exact in float32) give S = 2**24 - m, scale 1, and F_{j+1} - F_j = freq_j: exactly our tables.
_TABLE_FAMILY = constriction.stream.model.Categorical(perfect=False)
_HALF_MODEL = constriction.stream.model.Uniform(1 << _HALF_BITS)
KERNEL_DEVICES = ("cuda",)  # device types whose tables the Triton kernel builds
TableBuilder = Callable[..., RateTable]  # rate_table's signature: (mean, scale, window, lo, hi, symbols=None)


def table_builder(device: torch.device) -> TableBuilder:
    """How tables of a model on `device` are built: by `rate_table_triton` on that device when it is CUDA and
    triton imports (the table then moves to the CPU for constriction), else by the CPU `rate_table`.

    Encoder and decoder decide alike from the model's device; the kernel's exp is the device's, so a file
    coded with CUDA tables needs CUDA tables to decode (the network ties it to CUDA anyway).
    """
    if device.type not in KERNEL_DEVICES:
        return rate_table
    try:
        from diffcodec.entropy.triton_tables import rate_table_triton
    except ImportError:
        return rate_table
    return lambda *args: _on_cpu(rate_table_triton(*args))


def _on_cpu(table: RateTable) -> RateTable:
    columns = None if table.columns is None else table.columns.cpu()
    return RateTable(table.base.cpu(), table.rows.cpu(), columns, table.escapes, table.bits)


@one_thread()  # like the network: immune to oversubscribed cores, and the tables never depend on the split
def encode_symbols(
    symbols: np.ndarray,
    mean: Tensor | np.ndarray,
    scale: Tensor | np.ndarray,
    lo: int | None = None,
    hi: int | None = None,
    clock: dict[str, float] | None = None,
) -> tuple[bytes, float]:
    """Range-code integer symbols, symbol i under the discretized logistic (mean[i], scale[i]).

    Args:
        symbols: (n,) integers; within [lo, hi] when bounded, within 32-bit offsets of round(mean).
        mean, scale: (n,) floats in symbol units, scale > 0; the decoder needs bit-identical values.
        lo, hi: optional inclusive integer bounds (e.g. 0 and 255 for pixels).
        clock: if given, seconds spent building tables ("tables") and range coding ("coder") are added to it.

    Returns:
        (payload, bits): the payload bytes and the exact information content of the symbols under
        the integer tables. The payload is 1 header byte plus compressed words exceeding `bits` by
        the range coder's flush (< 64 bits) and rounding (~1.5e-4 bits per symbol).

    Example:
        >>> k, m, s = np.array([0, 1, -2]), np.zeros(3), np.ones(3)
        >>> payload, bits = encode_symbols(k, m, s)
        >>> assert (decode_symbols(payload, m, s) == k).all()
    """
    encoder = new_encoder()
    bits = encode_symbols_into(encoder, symbols, mean, scale, lo, hi, clock)
    return bytes([WINDOW_SCALES]) + finish(encoder), bits


@one_thread()
def encode_symbols_into(
    encoder: constriction.stream.queue.RangeEncoder,
    symbols: np.ndarray,
    mean: Tensor | np.ndarray,
    scale: Tensor | np.ndarray,
    lo: int | None = None,
    hi: int | None = None,
    clock: dict[str, float] | None = None,
) -> float:
    """`encode_symbols` into a range coder other parts share (entropy/shared.py), with the window rule WINDOW_SCALES
    (the caller records it); returns the information content in bits."""
    mean_t, scale_t = _check_model(mean, scale, lo, hi)
    symbols_t = _check_symbols(symbols, mean_t.shape[0], lo, hi)
    bits = 0.0
    ticks = _Ticks(clock)
    plan = _Plan(scale_t, WINDOW_SCALES, lo, hi)
    device = _device(mean)
    build = table_builder(device)
    mean_s, scale_s, symbols_s = plan.sort(mean_t).to(device), plan.sort(scale_t).to(device), plan.sort(symbols_t)
    for rows, window in plan.batches():
        table = build(mean_s[rows], scale_s[rows], window, lo, hi, symbols_s[rows].to(device))
        bits += table.bits
        ticks.lap("tables")
        encoder.encode(_int32(table.columns), _TABLE_FAMILY, table.rows.numpy())
        if table.escapes:
            escaped = table.columns == 2 * window + 1
            offsets = symbols_s[rows][escaped] - table.base[escaped]
            _check_offsets(offsets)
            encoder.encode(_split_offsets(offsets), _HALF_MODEL)
        ticks.lap("coder")
    return bits


@one_thread()
def decode_symbols(
    payload: bytes,
    mean: Tensor | np.ndarray,
    scale: Tensor | np.ndarray,
    lo: int | None = None,
    hi: int | None = None,
    clock: dict[str, float] | None = None,
) -> np.ndarray:
    """Inverse of `encode_symbols` given the same mean, scale and bounds: (n,) int64 symbols.
    `clock` as in `encode_symbols`.

    Raises:
        BitstreamError: the payload is cut inside its header or its words, has an invalid window
            rule, or does not decode to symbols of this model (corrupt, truncated, padded, or
            coded with other parameters; a corrupt payload is not always detected, the
            container's checksum is what guarantees integrity).
    """
    window_scales, words = _parse_payload(payload)
    decoder = constriction.stream.queue.RangeDecoder(words)
    symbols = decode_symbols_from(decoder, mean, scale, lo, hi, clock, window_scales)
    if not decoder.maybe_exhausted():
        raise BitstreamError(
            "entropy payload does not end where its symbols do: it is truncated, padded or corrupt"
        )
    return symbols


@one_thread()
def decode_symbols_from(
    decoder: constriction.stream.queue.RangeDecoder,
    mean: Tensor | np.ndarray,
    scale: Tensor | np.ndarray,
    lo: int | None = None,
    hi: int | None = None,
    clock: dict[str, float] | None = None,
    window_scales: int = WINDOW_SCALES,
) -> np.ndarray:
    """Inverse of `encode_symbols_into`: (n,) int64 symbols read from a shared range decoder (with window rule
    `window_scales`), which then goes on to the next part (BitstreamError as `decode_symbols`)."""
    if window_scales == 0:
        raise BitstreamError("entropy payload has window rule 0: windows must scale with c >= 1")
    mean_t, scale_t = _check_model(mean, scale, lo, hi)
    symbols = torch.zeros(mean_t.shape[0], dtype=torch.int64)
    ticks = _Ticks(clock)
    plan = _Plan(scale_t, window_scales, lo, hi)
    device = _device(mean)
    build = table_builder(device)
    mean_s, scale_s = plan.sort(mean_t).to(device), plan.sort(scale_t).to(device)
    for rows, window in plan.batches():
        table = build(mean_s[rows], scale_s[rows], window, lo, hi)
        ticks.lap("tables")
        columns = torch.from_numpy(_decode(decoder, _TABLE_FAMILY, table.rows.numpy()).astype(np.int64))
        batch = table.base + columns - window
        escaped = columns == 2 * window + 1
        escapes = int(escaped.sum())
        if escapes:
            batch[escaped] = table.base[escaped] + _join_offsets(_decode(decoder, _HALF_MODEL, 2 * escapes))
        ticks.lap("coder")
        symbols[plan.order[rows]] = batch
    _check_decoded_range(symbols, lo, hi)
    return symbols.numpy()


class _Ticks:
    """Adds the seconds since the last lap to clock[name] (does nothing without a clock)."""

    def __init__(self, clock: dict[str, float] | None) -> None:
        self.clock, self.last = clock, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.clock is not None:
            self.clock[name] = self.clock.get(name, 0.0) + now - self.last
        self.last = now


class _Plan:
    """The coding order: symbols grouped by W_i (stable), each group cut into batches of TABLE_ENTRIES."""

    def __init__(self, scale: Tensor, window_scales: int, lo: int | None, hi: int | None) -> None:
        windows = symbol_windows(scale, window_scales, lo, hi)
        self.order = torch.from_numpy(np.argsort(windows.numpy(), kind="stable"))  # a radix sort on uint8
        values, counts = torch.unique_consecutive(windows[self.order], return_counts=True)
        self.groups = list(zip(values.tolist(), counts.tolist()))

    def sort(self, values: Tensor) -> Tensor:
        """`values` in coding order (one gather; batches are then contiguous slices)."""
        return torch.index_select(values, 0, self.order)

    def batches(self) -> Iterator[tuple[slice, int]]:
        """(slice of the sorted symbols, W) of each batch in coding order."""
        start = 0
        for window, count in self.groups:
            rows = max(1, TABLE_ENTRIES // (2 * window + 2))
            for first in range(start, start + count, rows):
                yield slice(first, min(first + rows, start + count)), window
            start += count


def _device(values: Tensor | np.ndarray) -> torch.device:
    """The device of the model's arrays (numpy arrays live on the CPU)."""
    return values.device if isinstance(values, Tensor) else torch.device("cpu")


def _int32(values: Tensor) -> np.ndarray:
    """int32 numpy copy of an integer tensor, as constriction expects symbols."""
    return values.to(torch.int32).numpy()


def _split_offsets(offsets: Tensor) -> np.ndarray:
    """32-bit two's complement offsets -> interleaved (high, low) 16-bit halves, int32 (2e,)."""
    unsigned = offsets & ((1 << ESCAPE_BITS) - 1)
    halves = torch.stack([unsigned >> _HALF_BITS, unsigned & _HALF_MASK], dim=1)
    return _int32(halves.reshape(-1))


def _join_offsets(halves: np.ndarray) -> Tensor:
    """Inverse of `_split_offsets`: (2e,) halves -> (e,) signed int64 offsets."""
    pairs = torch.from_numpy(halves.astype(np.int64)).reshape(-1, 2)
    unsigned = (pairs[:, 0] << _HALF_BITS) | pairs[:, 1]
    return torch.where(unsigned > _OFFSET_MAX, unsigned - (1 << ESCAPE_BITS), unsigned)


def _decode(decoder: constriction.stream.queue.RangeDecoder, *model_args: object) -> np.ndarray:
    """One constriction decode call, its failures reported as BitstreamError."""
    try:
        return decoder.decode(*model_args)
    except (RuntimeError, ValueError, AssertionError) as err:
        raise BitstreamError(f"entropy payload is corrupt: the range decoder failed ({err})") from err


def _parse_payload(payload: bytes) -> tuple[int, np.ndarray]:
    """Check the header; split a payload into (window rule c, compressed words)."""
    if len(payload) < 1 or (len(payload) - 1) % 4:
        raise BitstreamError(
            f"entropy payload of {len(payload)} bytes is cut or padded: it must be a 1-byte header "
            "followed by whole 32-bit words"
        )
    return payload[0], np.frombuffer(payload, dtype="<u4", offset=1).astype(np.uint32)


def _check_model(
    mean: Tensor | np.ndarray, scale: Tensor | np.ndarray, lo: int | None, hi: int | None
) -> tuple[Tensor, Tensor]:
    """Validate the model arrays and bounds; return them as float64 CPU tensors of shape (n,)."""
    mean_t = torch.as_tensor(mean).detach().cpu().double()
    scale_t = torch.as_tensor(scale).detach().cpu().double()
    if mean_t.ndim != 1 or scale_t.shape != mean_t.shape:
        raise BadInputError(
            f"mean and scale must be 1-D of one length, got shapes {tuple(mean_t.shape)} and {tuple(scale_t.shape)}"
        )
    if not bool((torch.isfinite(mean_t) & (mean_t.abs() <= _OFFSET_MAX)).all()):
        raise BadInputError("mean must be finite and within the 32-bit integer range")
    if not bool((torch.isfinite(scale_t) & (scale_t > 0)).all()):
        raise BadInputError("scale must be finite and > 0 everywhere (clamp it to a small positive floor)")
    if lo is not None and hi is not None and lo > hi:
        raise BadInputError(f"bounds lo={lo} > hi={hi}: pass lo <= hi, or None for no bound")
    return mean_t, scale_t


def _check_symbols(symbols: np.ndarray, n: int, lo: int | None, hi: int | None) -> Tensor:
    """Validate the symbols against the model length and bounds; return them as int64 tensor."""
    array = np.asarray(symbols)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
        raise BadInputError(f"symbols must be a 1-D integer array of length {n}, got {array.dtype} {array.shape}")
    symbols_t = torch.from_numpy(array.astype(np.int64))
    if (lo is not None and bool((symbols_t < lo).any())) or (hi is not None and bool((symbols_t > hi).any())):
        raise BadInputError(f"symbols fall outside the bounds [{lo}, {hi}] they are coded with")
    return symbols_t


def _check_offsets(offsets: Tensor) -> None:
    """Escape offsets k - base must fit a 32-bit two's complement integer."""
    if offsets.numel() and (int(offsets.min()) < _OFFSET_MIN or int(offsets.max()) > _OFFSET_MAX):
        raise BadInputError("a symbol is more than 2**31 away from round(mean): it cannot be escaped in 32 bits")


def _check_decoded_range(symbols: Tensor, lo: int | None, hi: int | None) -> None:
    """Decoded symbols outside the bounds can only come from a corrupt payload."""
    if (lo is not None and bool((symbols < lo).any())) or (hi is not None and bool((symbols > hi).any())):
        raise BitstreamError(f"entropy payload decodes to symbols outside [{lo}, {hi}]: it is corrupt")
