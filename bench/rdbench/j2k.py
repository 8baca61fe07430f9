"""JPEG 2000 with quality layers as ONE progressive file: the real bytes of its first L layers.

The codestream is written with PLT markers (the length of every packet) and LRCP progression (layer
first), so the first L layers are a prefix of the packet data: cutting the file there, fixing the tile-part
length and appending EOC gives a valid, smaller codestream that any decoder reads as L layers.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

RAW_BITS_PER_PIXEL = 24  # OpenJPEG's rates are compression ratios against 8-bit RGB
SOC, SOT, SOD, EOC, PLT = 0xFF4F, 0xFF90, 0xFF93, b"\xff\xd9", 0xFF58


@dataclass(frozen=True)
class Layout:
    """Where the single tile-part starts, where its packet data starts, and every packet's length."""

    sot: int
    sod_end: int
    packets: list[int]


def encode_layers(pixels: np.ndarray, bpps: list[float]) -> bytes:
    """One irreversible (9/7, colour transform mct=1) codestream whose layer i targets bpps[i] bits per pixel."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG2000", no_jp2=True, irreversible=True, mct=1, progression="LRCP",
                                 quality_mode="rates", quality_layers=[RAW_BITS_PER_PIXEL / b for b in sorted(bpps)],
                                 plt=True)
    return buf.getvalue()


def _plt_lengths(segment: bytes) -> list[int]:
    """Packet lengths of one PLT marker segment (after Zplt): 7 bits per byte, high bit = more bytes follow."""
    out, v = [], 0
    for byte in segment:
        v = (v << 7) | (byte & 0x7F)
        if not byte & 0x80:
            out.append(v)
            v = 0
    return out


def parse(data: bytes) -> Layout:
    """The layout of a single-tile, single-tile-part codestream with PLT markers."""
    if struct.unpack(">H", data[:2])[0] != SOC:
        raise ValueError("not a JPEG 2000 codestream (no SOC marker)")
    pos = 2
    while struct.unpack(">H", data[pos:pos + 2])[0] != SOT:  # main header segments
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    sot = pos
    _, lsot, _, psot, tpsot, tnsot = struct.unpack(">HHHIBB", data[pos:pos + 12])
    if tnsot != 1 or psot == 0:
        raise ValueError("expected one tile in one tile-part")
    pos += 2 + lsot
    packets: list[int] = []
    while (marker := struct.unpack(">H", data[pos:pos + 2])[0]) != SOD:  # tile-part header segments
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker == PLT:
            packets += _plt_lengths(data[pos + 5:pos + 2 + length])
        pos += 2 + length
    sod_end = pos + 2
    if sum(packets) != sot + psot - sod_end:
        raise ValueError("the PLT packet lengths do not add up to the tile-part: was it written with plt=True?")
    return Layout(sot, sod_end, packets)


def layer_prefix(data: bytes, layers: int, n_layers: int) -> bytes:
    """The codestream cut after its first `layers` quality layers (of n_layers), as a valid file."""
    layout = parse(data)
    per_layer, rest = divmod(len(layout.packets), n_layers)
    if rest:
        raise ValueError(f"{len(layout.packets)} packets do not split into {n_layers} layers")
    cut = layout.sod_end + sum(layout.packets[: layers * per_layer])
    out = bytearray(data[:cut]) + EOC
    struct.pack_into(">I", out, layout.sot + 6, cut - layout.sot)  # Psot: the tile-part now ends at the cut
    return bytes(out)
