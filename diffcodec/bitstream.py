"""The diffcodec container: a versioned header, then a sequence of chunks.

Decoding the first k chunks gives rung k of the progressive ladder, so a file cut at any chunk
boundary is a valid file with fewer chunks; a chunk cut in the middle is dropped and reported.
Pure byte handling: no torch, no model. The byte layout is specified in docs/format.md; the
golden file tests/data/golden_v2.bin pins it.

Every rung carries a reconstruction check (`rung_check` of the pixels the encoder saw at that
rung): the header for rung 0, each chunk for the rung it completes. The decoder recomputes it, so
a decoder whose arithmetic differs from the encoder's reports an error instead of a wrong image.

    >>> h = Header("demo", bytes(8), height=2, width=3, mode="RGB", palette=None, seed=7, steps=2,
    ...            check=0)
    >>> data = write_stream(h, [Chunk(CODER_UQ, b"step 1", check=1)])
    >>> s = read_stream(data[:-1])  # cut inside the only chunk
    >>> (s.header == h, s.chunks, s.trailing_bytes)
    (True, [], 18)
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from diffcodec.errors import BadInputError, BitstreamError

__all__ = [
    "CHUNK_FRAME_SIZE",
    "CODER_CONTEXT",
    "CODER_CONTEXT_SCALED",
    "CODER_FILTERED",
    "CODER_REC",
    "CODER_REC_ESCAPE",
    "CODER_REC_ESCAPE_GROUPED",
    "CODER_REC_ESCAPE_PACKED",
    "CODER_REC_GROUPED",
    "CODER_REC_PACKED",
    "CODER_REC_POWER",
    "CODER_REC_STREAM",
    "CODER_REC_STREAM_WIDE",
    "CODER_UQ",
    "CODER_UQ_GROUPED",
    "CODER_UQ_PACKED",
    "CODERS",
    "FORMAT_VERSION",
    "MAGIC",
    "MODES",
    "PALETTE_SIZE",
    "READ_VERSIONS",
    "Chunk",
    "ChunkSpan",
    "Header",
    "Stream",
    "pack_varints",
    "read_stream",
    "read_varint",
    "rung_check",
    "unwrap_filtered",
    "wrap_filtered",
    "write_stream",
]

MAGIC = b"\x89DCZ"
"""First 4 bytes of every diffcodec file (non-ASCII first byte, like PNG's)."""

FORMAT_VERSION = 3
"""The container version this module writes. Version 3's chunks are those of version 2; only the networks' tiling
differs (tiling.py: from version 3 an image of 256 pixels or more on its longer side runs as two halves)."""
READ_VERSIONS = (2, 3)
"""The versions this module reads (version 1 files are refused)."""

CODER_UQ = 1
CODER_REC = 2
CODER_CONTEXT = 3
CODER_CONTEXT_SCALED = 4
CODER_REC_POWER = 5
CODER_UQ_GROUPED = 6
CODER_REC_GROUPED = 7
CODER_REC_ESCAPE = 8
CODER_REC_ESCAPE_GROUPED = 9
CODER_UQ_PACKED = 10
CODER_REC_PACKED = 11
CODER_REC_ESCAPE_PACKED = 12
CODER_REC_STREAM = 13
CODER_REC_STREAM_WIDE = 14
CODER_FILTERED = 15
CODERS: dict[int, str] = {CODER_UQ: "uq", CODER_REC: "rec", CODER_CONTEXT: "context",
                          CODER_CONTEXT_SCALED: "context-scaled", CODER_REC_POWER: "rec-power",
                          CODER_UQ_GROUPED: "uq-grouped", CODER_REC_GROUPED: "rec-grouped",
                          CODER_REC_ESCAPE: "rec-escape", CODER_REC_ESCAPE_GROUPED: "rec-escape-grouped",
                          CODER_UQ_PACKED: "uq-packed", CODER_REC_PACKED: "rec-packed",
                          CODER_REC_ESCAPE_PACKED: "rec-escape-packed", CODER_REC_STREAM: "rec-stream",
                          CODER_REC_STREAM_WIDE: "rec-stream-wide", CODER_FILTERED: "filtered"}
"""Chunk coder ids -> names. Ids are stable and never reused; new coders get new ids."""

MODES: dict[str, int] = {"RGB": 1, "L": 2, "P": 3, "1": 4}
"""Original PIL image mode -> id stored in the header (stable ids, not list positions)."""
_MODE_NAMES = {mode_id: mode for mode, mode_id in MODES.items()}

PALETTE_SIZE = 768
"""Bytes of a mode "P" palette: 256 RGB triples, padded with zeros if the image uses fewer."""

HASH_SIZE = 8
MAX_NAME_BYTES = 255

# Header: fixed prefix (magic, version, header_size), fixed fields, then the model name, the
# palette (mode "P" only) and the CRC32. See docs/format.md for the table.
_PREFIX = struct.Struct("<4sBH")  # magic, version, header_size
_FIELDS = struct.Struct("<IIBHQ8sIB")  # height, width, mode, steps, seed, weights_hash, check, name_len
_CRC = struct.Struct("<I")
_MIN_HEADER_SIZE = _PREFIX.size + _FIELDS.size + _CRC.size  # 43: empty name, no palette

_FRAME_HEAD = struct.Struct("<BII")  # coder, payload length, check; the CRC32 follows
CHUNK_FRAME_SIZE = _FRAME_HEAD.size + _CRC.size
"""Bytes of framing before each chunk payload (13)."""

_U16, _U32, _U64 = 2**16 - 1, 2**32 - 1, 2**64 - 1


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def rung_check(pixels: bytes | bytearray | memoryview) -> int:
    """The reconstruction check of a rung: CRC32 of its (H, W, 3) uint8 RGB pixels in row-major
    order (`pixels.tobytes()` of a numpy array)."""
    return zlib.crc32(pixels)


def pack_varints(values: Sequence[int]) -> bytes:
    """Unsigned LEB128: each value >= 0 in 7-bit groups, low group first, the high bit set on all but the last."""
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append(v & 0x7F | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """(value, the position after it) of the LEB128 value at `pos` (BitstreamError naming `what` if it is cut or
    longer than 64 bits)."""
    value = 0
    for shift in range(0, 64, 7):
        if pos >= len(data):
            raise BitstreamError(f"{what} is cut: it is corrupt")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise BitstreamError(f"{what} is longer than 64 bits: it is corrupt")


def _check_u32(what: str, value: object) -> None:
    if not _is_int(value) or not 0 <= value <= _U32:  # type: ignore[operator]
        raise BadInputError(f"{what} must be an int in [0, {_U32}] (a rung_check), got {value!r}")


@dataclass(frozen=True)
class Header:
    """Everything a decoder needs before the first chunk.

    Construction validates every field (BadInputError with the reason), so a Header is always
    writable. `weights_hash` is the first 8 bytes of sha256(weights file); `palette` is 768 bytes
    for mode "P" and None otherwise; `steps` is T, the number of diffusion steps, so a file holds
    at most T + 1 chunks (T step chunks, then the lossless chunk); `check` is the rung_check of
    the encoder's rung-0 reconstruction; `version` is the container version (READ_VERSIONS), which
    fixes how the decoder tiles the networks.
    """

    model_name: str
    weights_hash: bytes
    height: int
    width: int
    mode: str
    palette: bytes | None
    seed: int
    steps: int
    check: int
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise BadInputError(f"model_name must be a non-empty str, got {self.model_name!r}")
        try:
            name_bytes = len(self.model_name.encode("utf-8"))
        except UnicodeEncodeError as e:
            raise BadInputError(f"model_name cannot be encoded as UTF-8: {e}") from None
        if name_bytes > MAX_NAME_BYTES:
            raise BadInputError(
                f"model_name is {name_bytes} bytes in UTF-8; the format allows at most "
                f"{MAX_NAME_BYTES}: use a shorter zoo name"
            )
        if not isinstance(self.weights_hash, bytes) or len(self.weights_hash) != HASH_SIZE:
            raise BadInputError(
                f"weights_hash must be {HASH_SIZE} bytes (the first {HASH_SIZE} of the sha256 "
                f"of the weights file), got {self.weights_hash!r}"
            )
        for name, value in (("height", self.height), ("width", self.width)):
            if not _is_int(value) or not 1 <= value <= _U32:
                raise BadInputError(f"{name} must be an int in [1, {_U32}], got {value!r}")
        if self.mode not in MODES:
            raise BadInputError(
                f"image mode {self.mode!r} cannot be stored; convert the image to one of "
                f"{', '.join(MODES)} first"
            )
        if self.mode == "P":
            if not isinstance(self.palette, bytes) or len(self.palette) != PALETTE_SIZE:
                got = len(self.palette) if isinstance(self.palette, bytes) else repr(self.palette)
                raise BadInputError(
                    f'mode "P" needs a palette of exactly {PALETTE_SIZE} bytes (256 RGB '
                    f"triples; pad a shorter PIL palette with zeros), got {got}"
                )
        elif self.palette is not None:
            raise BadInputError(f'palette must be None for mode {self.mode!r} (only "P" has one)')
        if not _is_int(self.seed) or not 0 <= self.seed <= _U64:
            raise BadInputError(f"seed must be an int in [0, 2**64 - 1], got {self.seed!r}")
        if not _is_int(self.steps) or not 1 <= self.steps <= _U16:
            raise BadInputError(f"steps must be an int in [1, {_U16}], got {self.steps!r}")
        _check_u32("check", self.check)
        if self.version not in READ_VERSIONS:
            raise BadInputError(f"version must be one of {', '.join(map(str, READ_VERSIONS))}, got {self.version!r}")

    @property
    def weights_hash_hex(self) -> str:
        """The weights hash as 16 hex digits, as shown to users."""
        return self.weights_hash.hex()

    @property
    def max_chunks(self) -> int:
        """T + 1: the step chunks and the final lossless chunk."""
        return self.steps + 1


@dataclass(frozen=True)
class Chunk:
    """One rung's worth of data: the id of the coder that wrote it, its bytes, and the rung_check of
    the encoder's reconstruction at the rung it completes (the exact pixels for the last chunk)."""

    coder: int
    payload: bytes
    check: int

    def __post_init__(self) -> None:
        if self.coder not in CODERS:
            raise BadInputError(f"unknown coder id {self.coder!r}; known ids: {_known_coders()}")
        if not isinstance(self.payload, bytes):
            raise BadInputError(f"chunk payload must be bytes, got {type(self.payload).__name__}")
        if len(self.payload) > _U32:
            raise BadInputError(f"chunk payload is {len(self.payload)} bytes; at most {_U32}")
        _check_u32("chunk check", self.check)


def wrap_filtered(chunk: Chunk, rung_filter: bytes) -> Chunk:
    """`chunk` with a rung filter's bytes beside its payload: a `filtered` chunk (u8 inner coder, the filter's length
    as a varint, the filter, then the inner payload)."""
    if chunk.coder == CODER_FILTERED:
        raise BadInputError("a filtered chunk cannot be wrapped again")
    return Chunk(CODER_FILTERED, bytes([chunk.coder]) + pack_varints([len(rung_filter)]) + rung_filter + chunk.payload,
                 chunk.check)


def unwrap_filtered(chunk: Chunk, what: str) -> tuple[Chunk, bytes | None]:
    """(the chunk inside, the rung filter's bytes) of a `filtered` chunk; (chunk, None) for any other
    (BitstreamError naming `what` where the wrapping is cut or holds an unknown or filtered coder)."""
    if chunk.coder != CODER_FILTERED:
        return chunk, None
    data = chunk.payload
    if not data or data[0] not in CODERS or data[0] == CODER_FILTERED:
        inner = repr(data[0]) if data else "none"
        raise BitstreamError(f"{what}: a filtered chunk holds coder {inner}, which it cannot: it is corrupt")
    size, pos = read_varint(data, 1, f"{what}: the rung filter's length")
    if pos + size > len(data):
        raise BitstreamError(f"{what}: a rung filter of {size} bytes runs past its chunk: it is corrupt")
    return Chunk(data[0], data[pos + size:], chunk.check), data[pos:pos + size]


@dataclass(frozen=True)
class ChunkSpan:
    """Where one chunk lies in the file: `offset` of its framing, `size` on disk (framing and
    payload together)."""

    offset: int
    size: int

    @property
    def end(self) -> int:
        """Bytes from the start of the file through this chunk: the size of a file cut after it."""
        return self.offset + self.size


@dataclass(frozen=True)
class Stream:
    """A parsed file: its header, every complete chunk, and where they lie.

    `trailing_bytes` counts the bytes of an incomplete last chunk that were ignored (0 for a file
    cut at a chunk boundary). `spans[i]` locates `chunks[i]`.
    """

    header: Header
    chunks: list[Chunk]
    header_size: int
    spans: list[ChunkSpan]
    trailing_bytes: int

    @property
    def complete(self) -> bool:
        """True when all T + 1 chunks are present, so the last rung is lossless."""
        return len(self.chunks) == self.header.max_chunks

    def rung_bytes(self, k: int) -> int:
        """Size in bytes of the file cut after chunk k (rung k); rung 0 is the header alone."""
        if not _is_int(k) or not 0 <= k <= len(self.chunks):
            raise BadInputError(f"rung must be in [0, {len(self.chunks)}], got {k!r}")
        return self.spans[k - 1].end if k else self.header_size


def _known_coders() -> str:
    return ", ".join(f"{i} = {name}" for i, name in CODERS.items())


def _encode_header(header: Header) -> bytes:
    """The header's bytes, its CRC32 last."""
    name = header.model_name.encode("utf-8")
    palette = header.palette or b""
    size = _MIN_HEADER_SIZE + len(name) + len(palette)
    body = b"".join(
        (
            _PREFIX.pack(MAGIC, header.version, size),
            _FIELDS.pack(
                header.height,
                header.width,
                MODES[header.mode],
                header.steps,
                header.seed,
                header.weights_hash,
                header.check,
                len(name),
            ),
            name,
            palette,
        )
    )
    return body + _CRC.pack(zlib.crc32(body))


def _chunk_crc(frame_head: bytes | memoryview, payload: bytes, prev_crc: int) -> int:
    """CRC32 of coder, length, check and payload, continuing from the previous CRC in the file (the
    header's for chunk 0): this binds each chunk to its header and to the chunks before it."""
    return zlib.crc32(payload, zlib.crc32(frame_head, prev_crc))


def write_stream(header: Header, chunks: Sequence[Chunk]) -> bytes:
    """The whole file: header, then the chunks in order (at most T + 1 of them)."""
    if len(chunks) > header.max_chunks:
        raise BadInputError(
            f"{len(chunks)} chunks given, but a stream of {header.steps} steps holds at most "
            f"{header.max_chunks} (one per step, then the lossless chunk)"
        )
    head = _encode_header(header)
    parts = [head]
    (crc,) = _CRC.unpack_from(head, len(head) - _CRC.size)
    for chunk in chunks:
        frame_head = _FRAME_HEAD.pack(chunk.coder, len(chunk.payload), chunk.check)
        crc = _chunk_crc(frame_head, chunk.payload, crc)
        parts += [frame_head, _CRC.pack(crc), chunk.payload]
    return b"".join(parts)


_NEWER = " (written by a newer diffcodec? upgrade to read it)"
_OTHER_VERSIONS = {
    1: " (version 1 has no reconstruction checks; decode it with diffcodec 0.1.0, then re-encode)",
}


def _read_header(data: memoryview) -> tuple[Header, int]:
    """Parse and check the header; returns it and its size in bytes."""
    n = len(data)
    if n < len(MAGIC):
        if MAGIC.startswith(bytes(data)):
            raise BitstreamError(f"truncated header: the file has only {n} bytes")
        raise BitstreamError("not a diffcodec file (it does not start with the diffcodec magic)")
    if bytes(data[: len(MAGIC)]) != MAGIC:
        raise BitstreamError(
            f"not a diffcodec file: it starts with {bytes(data[:4]).hex(' ')}, "
            f"expected {MAGIC.hex(' ')}"
        )
    if n > len(MAGIC) and data[len(MAGIC)] not in READ_VERSIONS:
        version = data[len(MAGIC)]
        raise BitstreamError(
            f"unsupported format version {version}: this diffcodec reads versions "
            f"{' and '.join(map(str, READ_VERSIONS))} only"
            f"{_OTHER_VERSIONS.get(version, '') if version < FORMAT_VERSION else _NEWER}"
        )
    if n < _PREFIX.size:
        raise BitstreamError(f"truncated header: the file has only {n} bytes")
    _, version, size = _PREFIX.unpack_from(data)
    if not _MIN_HEADER_SIZE <= size <= _MIN_HEADER_SIZE + MAX_NAME_BYTES + PALETTE_SIZE:
        raise BitstreamError(f"corrupt header: its declared size {size} bytes is impossible")
    if n < size:
        raise BitstreamError(f"truncated header: the header is {size} bytes, the file has only {n}")
    body = data[: size - _CRC.size]
    (stored_crc,) = _CRC.unpack_from(data, size - _CRC.size)
    if zlib.crc32(body) != stored_crc:
        raise BitstreamError("header checksum mismatch: the header is corrupt")

    height, width, mode_id, steps, seed, weights_hash, check, name_len = _FIELDS.unpack_from(
        data, _PREFIX.size
    )
    if mode_id not in _MODE_NAMES:
        raise BitstreamError(f"corrupt header: unknown image mode id {mode_id}")
    mode = _MODE_NAMES[mode_id]
    palette_len = PALETTE_SIZE if mode == "P" else 0
    if size != _MIN_HEADER_SIZE + name_len + palette_len:
        raise BitstreamError(
            f"corrupt header: declared size {size} does not match its fields "
            f"({name_len}-byte model name, {palette_len}-byte palette)"
        )
    name_at = _PREFIX.size + _FIELDS.size
    try:
        model_name = bytes(data[name_at : name_at + name_len]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise BitstreamError(f"corrupt header: model name is not UTF-8 ({e})") from None
    palette = bytes(data[name_at + name_len : name_at + name_len + palette_len]) or None
    try:
        header = Header(model_name, weights_hash, height, width, mode, palette, seed, steps, check, version)
    except BadInputError as e:
        raise BitstreamError(f"corrupt header: {e}") from None
    return header, size


def read_stream(data: bytes | bytearray | memoryview) -> Stream:
    """Parse a diffcodec file.

    The header must be complete and valid, every complete chunk must pass its CRC, and there may
    be at most T + 1 chunks; otherwise BitstreamError says what is wrong (naming the chunk index
    where one is at fault). An incomplete last chunk, as left by cutting a file mid-chunk, is
    dropped and its size reported in `Stream.trailing_bytes`.
    """
    view = memoryview(data).cast("B")
    header, header_size = _read_header(view)
    (crc,) = _CRC.unpack_from(view, header_size - _CRC.size)
    chunks: list[Chunk] = []
    spans: list[ChunkSpan] = []
    pos, n = header_size, len(view)
    while pos < n:
        if len(chunks) == header.max_chunks:
            raise BitstreamError(
                f"{n - pos} bytes after chunk {len(chunks) - 1}, the last chunk a stream of "
                f"{header.steps} steps can have"
            )
        if n - pos < CHUNK_FRAME_SIZE:
            break  # cut inside the framing
        coder, length, check = _FRAME_HEAD.unpack_from(view, pos)
        (stored_crc,) = _CRC.unpack_from(view, pos + _FRAME_HEAD.size)
        end = pos + CHUNK_FRAME_SIZE + length
        if end > n:
            break  # cut inside the payload
        payload = bytes(view[pos + CHUNK_FRAME_SIZE : end])
        if _chunk_crc(view[pos : pos + _FRAME_HEAD.size], payload, crc) != stored_crc:
            raise BitstreamError(f"chunk {len(chunks)} checksum mismatch: the chunk is corrupt")
        if coder not in CODERS:
            raise BitstreamError(
                f"chunk {len(chunks)}: unknown coder id {coder} (this diffcodec knows "
                f"{_known_coders()}); a newer diffcodec may read it"
            )
        chunks.append(Chunk(coder, payload, check))
        spans.append(ChunkSpan(pos, end - pos))
        crc, pos = stored_crc, end
    return Stream(header, chunks, header_size, spans, n - pos)
