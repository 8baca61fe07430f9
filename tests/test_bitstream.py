"""Tests of the container (diffcodec/bitstream.py) against its spec (docs/format.md).

Regenerate the golden file only on purpose: DIFFCODEC_REGEN_GOLDEN=1 pytest tests/test_bitstream.py
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from diffcodec.bitstream import (
    CHUNK_FRAME_SIZE,
    CODER_REC,
    CODER_UQ,
    FORMAT_VERSION,
    MAGIC,
    Chunk,
    ChunkSpan,
    Header,
    pack_varints,
    read_stream,
    read_varint,
    write_stream,
)
from diffcodec.errors import BadInputError, BitstreamError

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "golden_v3.bin"
GOLDEN_V2 = ROOT / "tests" / "data" / "golden_v2.bin"
GOLDEN_V1 = ROOT / "tests" / "data" / "golden_v1.bin"

GREY_PALETTE = bytes(v for v in range(256) for _ in range(3))
GOLDEN_HEADER = Header(
    model_name="golden-test-model",
    weights_hash=bytes.fromhex("0123456789abcdef"),
    height=3,
    width=5,
    mode="P",
    palette=GREY_PALETTE,
    seed=0xFEDCBA9876543210,
    steps=2,
    check=0x89ABCDEF,
)
GOLDEN_CHUNKS = [
    Chunk(CODER_UQ, b"step 1 payload", check=0x01020304),
    Chunk(CODER_REC, b"", check=0),
    Chunk(CODER_UQ, bytes(range(32)), check=0xFFFFFFFF),
]


def rgb_header(**changes: object) -> Header:
    base = Header(
        "uqdm-small", bytes(range(8)), height=64, width=48, mode="RGB", palette=None, seed=1,
        steps=4, check=0,
    )
    return replace(base, **changes)


def chunk_crc(coder: int, payload: bytes, prev_crc: int, check: int = 0) -> int:
    """The chunk CRC as docs/format.md defines it, written independently of the module."""
    head = struct.pack("<BII", coder, len(payload), check)
    return zlib.crc32(payload, zlib.crc32(head, prev_crc))


def raw_chunk(coder: int, payload: bytes, prev_crc: int, check: int = 0) -> bytes:
    crc = chunk_crc(coder, payload, prev_crc, check)
    return struct.pack("<BIII", coder, len(payload), check, crc) + payload


def last_crc(data: bytes) -> int:
    """The CRC that the next chunk continues from: the last 4-byte CRC written (header or chunk)."""
    s = read_stream(data)
    at = s.spans[-1].offset + 9 if s.spans else s.header_size - 4
    return struct.unpack_from("<I", data, at)[0]


# --- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        rgb_header(),
        rgb_header(mode="L", height=1, width=1, seed=0, steps=1),
        rgb_header(mode="1", height=2**32 - 1, width=7, seed=2**64 - 1, steps=2**16 - 1),
        rgb_header(mode="P", palette=GREY_PALETTE, model_name="ünïcode-模型" * 10),
        GOLDEN_HEADER,
    ],
)
@pytest.mark.parametrize("n_chunks", [0, 1, 2])
def test_round_trip(header: Header, n_chunks: int) -> None:
    chunks = [Chunk(CODER_UQ, bytes([i]) * (10 * i), check=i) for i in range(n_chunks)]
    data = write_stream(header, chunks)
    s = read_stream(data)
    assert s.header == header
    assert s.chunks == chunks
    assert s.trailing_bytes == 0
    assert s.complete == (n_chunks == header.steps + 1)
    sizes = [CHUNK_FRAME_SIZE + len(c.payload) for c in chunks]
    assert [span.size for span in s.spans] == sizes
    assert s.header_size + sum(sizes) == len(data)
    assert [s.rung_bytes(k) for k in range(n_chunks + 1)] == [
        s.header_size + sum(sizes[:k]) for k in range(n_chunks + 1)
    ]


def test_read_accepts_bytes_like() -> None:
    data = write_stream(GOLDEN_HEADER, GOLDEN_CHUNKS)
    for view in (bytearray(data), memoryview(data)):
        assert read_stream(view).chunks == GOLDEN_CHUNKS


def test_complete_stream_and_rung_bounds() -> None:
    s = read_stream(write_stream(GOLDEN_HEADER, GOLDEN_CHUNKS))
    assert s.complete and len(s.chunks) == GOLDEN_HEADER.steps + 1
    assert GOLDEN_HEADER.weights_hash_hex == "0123456789abcdef"
    with pytest.raises(BadInputError, match=r"rung must be in \[0, 3\]"):
        s.rung_bytes(4)


# --- truncation ---------------------------------------------------------------------------------


def test_every_cut_position() -> None:
    """Cut after every byte: header cuts fail, chunk-boundary cuts give fewer chunks, a cut inside a
    chunk drops exactly that chunk and reports its bytes."""
    data = write_stream(GOLDEN_HEADER, GOLDEN_CHUNKS)
    full = read_stream(data)
    boundaries = [full.header_size] + [span.end for span in full.spans]
    for cut in range(len(data) + 1):
        if cut < full.header_size:
            with pytest.raises(BitstreamError, match="truncated header"):
                read_stream(data[:cut])
            continue
        s = read_stream(data[:cut])
        k = sum(1 for b in boundaries[1:] if b <= cut)
        assert s.header == GOLDEN_HEADER
        assert s.chunks == GOLDEN_CHUNKS[:k]
        assert s.spans == full.spans[:k]
        assert s.trailing_bytes == cut - boundaries[k]
        assert (s.trailing_bytes == 0) == (cut in boundaries)


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"hello world, this is text", b"\x89PNG\r\n\x1a\n" + bytes(64), b"DCZ"]
)
def test_wrong_magic(data: bytes) -> None:
    with pytest.raises(BitstreamError, match="not a diffcodec file"):
        read_stream(data)


def test_unsupported_version_names_supported_ones() -> None:
    data = bytearray(write_stream(rgb_header(), []))
    data[4] = 4
    message = r"unsupported format version 4: .*reads versions 2 and 3 only.*newer"
    with pytest.raises(BitstreamError, match=message):
        read_stream(bytes(data))
    assert FORMAT_VERSION == 3 and data[:4] == MAGIC


@pytest.mark.parametrize("version", [0, 1, 4, "3"])
def test_a_header_of_a_version_this_reader_cannot_read_is_refused(version: object) -> None:
    with pytest.raises(BadInputError, match="version must be one of 2, 3"):
        replace(rgb_header(), version=version)


def test_version_1_file_is_refused_naming_the_release_that_reads_it() -> None:
    message = r"unsupported format version 1: .*reads versions 2 and 3 only.*diffcodec 0\.1\.0"
    with pytest.raises(BitstreamError, match=message):
        read_stream(GOLDEN_V1.read_bytes())


def test_header_checksum_mismatch() -> None:
    data = bytearray(write_stream(rgb_header(), []))
    data[18] ^= 0x01  # lowest bit of the seed
    with pytest.raises(BitstreamError, match="header checksum mismatch"):
        read_stream(bytes(data))


def test_chunk_checksum_mismatch_names_the_chunk() -> None:
    data = bytearray(write_stream(GOLDEN_HEADER, GOLDEN_CHUNKS))
    data[read_stream(bytes(data)).spans[2].offset + CHUNK_FRAME_SIZE + 3] ^= 0x80
    with pytest.raises(BitstreamError, match="chunk 2 checksum mismatch"):
        read_stream(bytes(data))


def test_crc_chain_catches_reordered_and_spliced_chunks() -> None:
    header = rgb_header()
    a, b = Chunk(CODER_UQ, b"aaaa", check=1), Chunk(CODER_UQ, b"bbbb", check=2)
    data = write_stream(header, [a, b])
    s = read_stream(data)
    first, second = (data[span.offset : span.end] for span in s.spans)
    with pytest.raises(BitstreamError, match="chunk 0 checksum mismatch"):
        read_stream(data[: s.header_size] + second + first)
    other = write_stream(replace(header, seed=2), [a])  # same chunk, another header
    with pytest.raises(BitstreamError, match="chunk 0 checksum mismatch"):
        read_stream(data[: s.header_size] + other[s.header_size :])


def test_unknown_coder_id_is_named() -> None:
    data = write_stream(rgb_header(), [Chunk(CODER_UQ, b"x", check=0)])
    data += raw_chunk(99, b"from the future", last_crc(data))
    with pytest.raises(BitstreamError, match="chunk 1: unknown coder id 99"):
        read_stream(data)


def test_more_than_t_plus_one_chunks() -> None:
    header = rgb_header(steps=1)
    chunks = [Chunk(CODER_UQ, b"1", check=1), Chunk(CODER_UQ, b"2", check=2)]
    with pytest.raises(BadInputError, match="at most 2"):
        write_stream(header, chunks + [Chunk(CODER_UQ, b"3", check=3)])
    data = write_stream(header, chunks)
    with pytest.raises(BitstreamError, match="after chunk 1"):
        read_stream(data + raw_chunk(CODER_UQ, b"3", last_crc(data)))
    with pytest.raises(BitstreamError, match="3 bytes after chunk 1"):
        read_stream(data + b"\x01\x00\x00")


def test_every_single_bit_flip_is_caught() -> None:
    """No flipped bit ever yields other chunks or another header. Every header bit and every chunk
    coder/check/CRC/payload bit raises; a chunk length bit either raises or, when the new length runs
    past the end of the file, reads as a cut there (the chunks before it, the rest reported)."""
    data = write_stream(GOLDEN_HEADER, GOLDEN_CHUNKS)
    full = read_stream(data)
    length_bytes = {span.offset + i: span for span in full.spans for i in range(1, 5)}
    cut_like = 0
    for bit in range(8 * len(data)):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        span = length_bytes.get(bit // 8)
        if span is None:
            with pytest.raises(BitstreamError):
                read_stream(bytes(flipped))
            continue
        try:
            s = read_stream(bytes(flipped))
        except BitstreamError:
            continue
        k = full.spans.index(span)
        assert s.header == GOLDEN_HEADER
        assert s.chunks == GOLDEN_CHUNKS[:k]
        assert s.trailing_bytes == len(data) - span.offset > 0
        cut_like += 1
    assert cut_like > 0  # the one undetectable case is exercised


# --- validation on write ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "CMYK"}, "'CMYK' cannot be stored; convert the image to one of RGB, L, P, 1"),
        ({"mode": "P"}, 'mode "P" needs a palette of exactly 768 bytes'),
        ({"mode": "P", "palette": bytes(767)}, "got 767"),
        ({"palette": GREY_PALETTE}, "palette must be None for mode 'RGB'"),
        ({"height": 0}, "height must be an int in"),
        ({"width": 2**32}, "width must be an int in"),
        ({"width": 3.0}, "width must be an int in"),
        ({"seed": -1}, "seed must be an int in"),
        ({"seed": 2**64}, "seed must be an int in"),
        ({"steps": 0}, "steps must be an int in"),
        ({"steps": 2**16}, "steps must be an int in"),
        ({"model_name": ""}, "model_name must be a non-empty str"),
        ({"model_name": "é" * 128}, "256 bytes in UTF-8; the format allows at most 255"),
        ({"model_name": "\ud800"}, "model_name cannot be encoded as UTF-8"),
        ({"weights_hash": bytes(32)}, "weights_hash must be 8 bytes"),
        ({"weights_hash": "0123456789abcdef"}, "weights_hash must be 8 bytes"),
        ({"check": -1}, "check must be an int in [0, 4294967295]"),
        ({"check": 2**32}, "check must be an int in [0, 4294967295]"),
    ],
)
def test_invalid_header_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BadInputError, match=re.escape(message)):
        rgb_header(**changes)


def test_longest_name_and_palette_fit() -> None:
    header = rgb_header(model_name="n" * 255, mode="P", palette=GREY_PALETTE)
    s = read_stream(write_stream(header, []))
    assert s.header == header and s.header_size == 43 + 255 + 768


@pytest.mark.parametrize(
    ("coder", "payload", "check"),
    [(0, b"", 0), (99, b"", 0), (CODER_UQ, bytearray(b"x"), 0), (CODER_UQ, b"", -1), (CODER_UQ, b"", 2**32)],
)
def test_invalid_chunk_is_refused(coder: int, payload: bytes, check: int) -> None:
    with pytest.raises(BadInputError):
        Chunk(coder, payload, check)


# --- the spec -----------------------------------------------------------------------------------


def test_header_layout_matches_the_table() -> None:
    """Decode the golden header with the offsets of docs/format.md, not with the module."""
    data = write_stream(GOLDEN_HEADER, GOLDEN_CHUNKS)
    fields = struct.unpack_from("<4sBHIIBHQ8sIB", data)
    magic, version, size, height, width, mode, steps, seed, whash, check, name_len = fields
    assert (magic, version, height, width, mode, steps, seed, whash, check) == (
        b"\x89DCZ", 3, 3, 5, 3, 2, 0xFEDCBA9876543210, bytes.fromhex("0123456789abcdef"),
        0x89ABCDEF,
    )
    assert data[39 : 39 + name_len] == b"golden-test-model"
    assert data[39 + name_len : 39 + name_len + 768] == GREY_PALETTE
    assert size == 43 + name_len + 768
    (header_crc,) = struct.unpack_from("<I", data, size - 4)
    assert header_crc == zlib.crc32(data[: size - 4])
    prev, pos = header_crc, size
    for chunk in GOLDEN_CHUNKS:
        expected = raw_chunk(chunk.coder, chunk.payload, prev, chunk.check)
        assert data[pos : pos + len(expected)] == expected
        prev = chunk_crc(chunk.coder, chunk.payload, prev, chunk.check)
        pos += len(expected)
    assert pos == len(data)
    first = ChunkSpan(size, CHUNK_FRAME_SIZE + len(GOLDEN_CHUNKS[0].payload))
    assert read_stream(data).spans[0] == first


def test_golden_file() -> None:
    data = write_stream(GOLDEN_HEADER, GOLDEN_CHUNKS)
    if os.environ.get("DIFFCODEC_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_bytes(data)
        pytest.skip(f"regenerated {GOLDEN.relative_to(ROOT)} ({len(data)} bytes)")
    regen = "DIFFCODEC_REGEN_GOLDEN=1 pytest tests/test_bitstream.py"
    assert GOLDEN.exists(), f"{GOLDEN} is missing: {regen}"
    golden = GOLDEN.read_bytes()
    s = read_stream(golden)
    assert (s.header, s.chunks, s.trailing_bytes) == (GOLDEN_HEADER, GOLDEN_CHUNKS, 0)
    assert data == golden, "the writer no longer produces golden_v3.bin byte for byte"


def test_version_2_golden_file_is_still_read_and_written() -> None:
    """Version 3 changed no byte's layout, only how the codec tiles its networks: the reader gives a version 2
    header back as version 2, and such a header writes golden_v2.bin again."""
    golden = GOLDEN_V2.read_bytes()
    s = read_stream(golden)
    assert (s.header, s.chunks, s.trailing_bytes) == (replace(GOLDEN_HEADER, version=2), GOLDEN_CHUNKS, 0)
    assert write_stream(s.header, GOLDEN_CHUNKS) == golden


def test_docs_examples_run() -> None:
    """Every ```python block of docs/format.md runs and its assertions hold."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "format.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/format.md", "exec"), {})


def test_varints_round_trip_and_a_cut_one_is_an_error() -> None:
    values = [0, 1, 127, 128, 300, 2**32, 2**63]
    data = pack_varints(values)
    assert len(pack_varints([0])) == 1 and len(pack_varints([128])) == 2
    pos, got = 0, []
    for _ in values:
        v, pos = read_varint(data, pos, "a test value")
        got.append(v)
    assert got == values and pos == len(data)
    with pytest.raises(BitstreamError, match="a test value is cut"):
        read_varint(pack_varints([300])[:1], 0, "a test value")
    with pytest.raises(BitstreamError, match="longer than 64 bits"):
        read_varint(b"\xff" * 10, 0, "a test value")
