"""Hostile and broken inputs through the CLI and the API: every one gives a correct image or one clear line
on stderr with exit code 1, and never leaves a file behind."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffcodec
from diffcodec import codec
from diffcodec.bitstream import read_stream
from diffcodec.errors import BitstreamError

from conftest import KODIM01, KODIM20, rgb_pixels
from fuzzing import refresh_crcs
from test_cli import assert_error, cli, listing, ok

# --- images the encoder meets ---------------------------------------------------------------------------


def png_16bit_rgb(path: Path) -> Path:
    """A 16-bit RGB PNG written by hand (PIL cannot write one, and opens it as 8-bit "RGB")."""
    pixels = rgb_pixels(KODIM20).astype(">u2") * 257 + 1  # the low byte matters: 8 bits would lose it
    h, w = pixels.shape[:2]
    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def jpeg_bytes(mode: str = "RGB") -> bytes:
    with Image.open(KODIM01) as im:
        out = io.BytesIO()
        im.convert(mode).save(out, "JPEG", quality=90)
    return out.getvalue()


def saved(mode: str, suffix: str, **params: object) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / f"image.{suffix}"
        with Image.open(KODIM20) as im:
            rgb = im.convert("RGB")
        (rgb.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)).save(path, **params)
        return path
    return make


def written(name: str, content: Callable[[], bytes]) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content())
        return path
    return make


ENCODER_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty-file": (written("empty.png", bytes), "is empty"),
    "text-named-png": (written("notes.png", lambda: b"not an image\n"), "not a readable image"),
    "truncated-png": (written("cut.png", lambda: KODIM20.read_bytes()[:300]), "not a readable image"),
    "truncated-jpeg": (written("cut.jpg", lambda: jpeg_bytes()[:600]), "not a readable image"),
    "jpeg-header-only": (written("head.jpg", lambda: jpeg_bytes()[:2]), "not a readable image"),
    "diffcodec-file": (written("x.dcz", lambda: b"\x89DCZ\x02" + bytes(60)), "not a readable image"),
    "16-bit-rgb-png": (lambda d: png_16bit_rgb(d / "deep.png"), "16 bits per sample"),
    "16-bit-grey-png": (lambda d: Image.fromarray(np.full((9, 7), 4097, np.uint16)).save(d / "g.png") or d / "g.png",
                        "16 bits per sample"),
    "rgba-png": (saved("RGBA", "png"), "alpha channel"),
    "la-png": (saved("LA", "png"), "alpha channel"),
    "palette-with-transparency": (saved("P", "png", transparency=0), "transparency"),
    "cmyk-jpeg": (written("cmyk.jpg", lambda: jpeg_bytes("CMYK")), "'CMYK'"),
    "float-tiff": (saved("F", "tif"), "unsupported image mode 'F'"),
    "directory": (lambda d: d, "directory"),
    "missing": (lambda d: d / "missing.png", "no such file"),
}


@pytest.mark.parametrize("case", ENCODER_CASES)
def test_encoder_refuses_hostile_images(case: str, tmp_path: Path, tiny_model: Path) -> None:
    make, needle = ENCODER_CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    image = make(work)
    before = listing(work)
    assert_error(cli("encode", image, "-o", work / "out.dcz", "--model", tiny_model), 1, needle)
    assert listing(work) == before


def test_too_many_pixels_to_load_is_refused(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # kodim20 has 1961 pixels: over twice the limit
    assert_error(cli("encode", KODIM20, "-o", tmp_path / "x.dcz", "--model", tiny_model), 1, "too many pixels")
    assert listing(tmp_path) == set()


def test_jpeg_is_coded_as_the_pixels_it_decodes_to(tmp_path: Path, tiny_model: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes())
    data = diffcodec.encode(path, model=tiny_model, seed=2)
    assert np.array_equal(diffcodec.decode(data, model=tiny_model), rgb_pixels(path))


def test_exif_orientation_is_not_applied(tmp_path: Path, tiny_model: Path) -> None:
    """The stored raster is coded as it is (README: orientation is neither applied nor kept)."""
    path = tmp_path / "rotated.png"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    with Image.open(KODIM20) as im:
        im.convert("RGB").save(path, exif=exif)
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == 6
    pixels = diffcodec.decode(diffcodec.encode(path, model=tiny_model, seed=2), model=tiny_model)
    assert np.array_equal(pixels, rgb_pixels(KODIM20))  # 37 x 53 as stored, not turned to 53 x 37


# --- streams the decoder meets ----------------------------------------------------------------------------


def with_header_field(stream: bytes, offset: int, fmt: str, value: int) -> bytes:
    """The stream with one header field rewritten and every CRC recomputed: a crafted file."""
    b = bytearray(stream)
    struct.pack_into(fmt, b, offset, value)
    return refresh_crcs(bytes(b))


def test_absurd_dimensions_are_refused_before_the_model_is_even_loaded(stream20: bytes) -> None:
    huge = with_header_field(with_header_field(stream20, 7, "<I", 2**32 - 1), 11, "<I", 2**32 - 1)
    assert read_stream(huge).header.height == 2**32 - 1  # a valid container: only the codec can refuse it
    with pytest.raises(BitstreamError, match=r"4294967295 x 4294967295 image .* limit of 268435456.*--max-pixels"):
        diffcodec.decode(huge, model="no-such-model")  # refused before the model is looked up


def test_max_pixels_override(tmp_path: Path, tiny_model: Path, stream20: bytes) -> None:
    stream = tmp_path / "x.dcz"
    stream.write_bytes(stream20)  # 53 x 37 = 1961 pixels
    assert_error(cli("decode", stream, "-o", tmp_path / "x.png", "--model", tiny_model, "--max-pixels", 1960), 1,
                 "1961 pixels", "--max-pixels")
    assert not (tmp_path / "x.png").exists()
    ok(cli("decode", stream, "-o", tmp_path / "x.png", "--model", tiny_model, "--max-pixels", 1961))
    with pytest.raises(BitstreamError, match="limit of 1960"):
        diffcodec.decode(stream20, model=tiny_model, max_pixels=1960)


def test_header_whose_steps_disagree_with_the_model_is_refused(tiny_model: Path, stream20: bytes) -> None:
    crafted = with_header_field(stream20, 16, "<H", 5)  # the tiny model has T = 3
    with pytest.raises(BitstreamError, match="claims 5 steps, but its model 'tiny-test' has 3"):
        diffcodec.decode(crafted, model=tiny_model)


def test_version_1_file_names_the_release_that_reads_it(tmp_path: Path, tiny_model: Path) -> None:
    golden_v1 = Path(__file__).parent / "data" / "golden_v1.bin"
    assert_error(cli("decode", golden_v1, "-o", tmp_path / "x.png", "--model", tiny_model), 1,
                 "version 1", "reads versions 2 and 3 only", "diffcodec 0.1.0")
    assert listing(tmp_path) == set()


# --- errors at the CLI boundary ---------------------------------------------------------------------------


def test_unexpected_exception_is_one_line_and_debug_shows_it(tmp_path: Path, tiny_model: Path, stream20: bytes,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("DefaultCPUAllocator: not enough memory\nsecond line")

    stream = tmp_path / "x.dcz"
    stream.write_bytes(stream20)
    monkeypatch.setattr(codec, "iter_rungs", broken)
    line = assert_error(cli("decode", stream, "-o", tmp_path / "x.png", "--model", tiny_model), 1,
                        "internal error", "RuntimeError", "--debug")
    assert "second line" not in line
    result = cli("--debug", "decode", stream, "-o", tmp_path / "x.png", "--model", tiny_model)
    assert isinstance(result.exception, RuntimeError)
    assert listing(tmp_path) == {"x.dcz"}


def test_debug_flag_lets_library_errors_through(tmp_path: Path) -> None:
    result = cli("--debug", "decode", KODIM20, "-o", tmp_path / "x.png")
    assert isinstance(result.exception, diffcodec.BitstreamError)
    assert_error(cli("decode", KODIM20, "-o", tmp_path / "x.png"), 1, "not a diffcodec file")  # not sticky


def test_a_failed_write_leaves_no_file(tmp_path: Path, tiny_model: Path, stream20: bytes,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full half-way through the PNG: no output, no temporary file, one line."""
    def half_then_full(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"\x89PNG half")  # type: ignore[arg-type]
        raise OSError(28, "No space left on device")

    stream = tmp_path / "x.dcz"
    stream.write_bytes(stream20)
    monkeypatch.setattr(Image.Image, "save", half_then_full)
    assert_error(cli("decode", stream, "-o", tmp_path / "x.png", "--model", tiny_model), 1,
                 "cannot write", "No space left on device")
    assert listing(tmp_path) == {"x.dcz"}
