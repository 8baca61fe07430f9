"""Mutations of real diffcodec files and the oracle that judges their decoding, shared by the short
hypothesis test (tests/test_fuzz.py) and the long mutation loop (tools/fuzz.py).

A mutation is a kind (truncate, flip, set, insert, delete, append) at a position with a value, applied
either raw (the container's CRCs then catch it) or crafted: every CRC recomputed afterwards, as a
hostile writer would, so that the decoder itself meets the damage. The oracle decodes every rung and
sorts the result: `ok` (every rung present decoded, each equal to the reference rung), `cut` (fewer
rungs, each equal to the reference), or `error: <kind>` (a DiffcodecError, every rung shown before it
equal to the reference). A rung that differs from the reference raises WrongImage; any other
exception escapes: both are failures.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffcodec.codec import iter_rungs
from diffcodec.errors import DiffcodecError

KINDS = ("truncate", "flip", "set", "insert", "delete", "append")
_PREFIX = struct.Struct("<4sBH")  # magic, version, header_size (docs/format.md)
_FRAME = 13  # coder u8, length u32, check u32, crc u32


class WrongImage(AssertionError):
    """A rung was shown whose pixels are not the encoder's: the one outcome that must never happen."""


@dataclass(frozen=True)
class Mutation:
    kind: str
    at: int  # byte offset, taken modulo the file size (truncate: the new size)
    value: bytes  # the byte(s) written, inserted or appended; flip: value[0] % 8 is the bit
    crafted: bool  # recompute every CRC afterwards

    def apply(self, data: bytes) -> bytes:
        b = bytearray(data)
        at = self.at % (len(b) + 1)
        if self.kind == "truncate":
            del b[at:]
        elif self.kind == "flip" and b:
            b[at % len(b)] ^= 1 << (self.value[0] % 8)
        elif self.kind == "set" and b:
            b[at % len(b)] = self.value[0]
        elif self.kind == "insert":
            b[at:at] = self.value
        elif self.kind == "delete":
            del b[at : at + max(1, len(self.value))]
        elif self.kind == "append":
            b += self.value
        return refresh_crcs(bytes(b)) if self.crafted else bytes(b)

    @property
    def label(self) -> str:
        return f"{'crafted' if self.crafted else 'raw'} {self.kind}"


def refresh_crcs(data: bytes) -> bytes:
    """Recompute the header CRC and the chain of chunk CRCs (docs/format.md), whatever the fields say."""
    b = bytearray(data)
    if len(b) < _PREFIX.size:
        return data
    size = _PREFIX.unpack_from(b)[2]
    if not 4 <= size <= len(b):
        return data
    crc = zlib.crc32(b[: size - 4])
    struct.pack_into("<I", b, size - 4, crc)
    pos = size
    while pos + _FRAME <= len(b):
        end = pos + _FRAME + struct.unpack_from("<I", b, pos + 1)[0]
        if end > len(b):
            break
        crc = zlib.crc32(b[pos + _FRAME : end], zlib.crc32(b[pos : pos + 9], crc))
        struct.pack_into("<I", b, pos + 9, crc)
        pos = end
    return bytes(b)


def error_kind(e: DiffcodecError) -> str:
    """The message's first clause with numbers as N: 'chunk N checksum mismatch', 'truncated header', ..."""
    return f"{type(e).__name__}: " + re.sub(r"\d+", "N", str(e).split(":")[0].split(" (")[0])


def outcome(data: bytes, model: Path, reference: list[np.ndarray], max_pixels: int) -> str:
    """Decode every rung of `data` and judge it against `reference` (the rungs of the intact file)."""
    shown = 0
    try:
        for r in iter_rungs(data, model=model, max_pixels=max_pixels):
            if r.rung >= len(reference) or not np.array_equal(r.pixels, reference[r.rung]):
                raise WrongImage(f"rung {r.rung} differs from the encoder's")
            shown += 1
    except DiffcodecError as e:
        return f"error: {error_kind(e)}"
    return "ok" if shown == len(reference) else "cut"
