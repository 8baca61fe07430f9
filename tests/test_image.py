"""Image inputs (diffcodec/image.py): which modes are coded, how the original mode comes back from
decode_image, and how everything else is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffcodec
from diffcodec import BadInputError
from diffcodec.bitstream import PALETTE_SIZE, read_stream
from diffcodec.image import load_image, to_pil

from conftest import (
    KODIM01,
    KODIM08,
    KODIM20,
    SAMPLE,
    TINY_STEPS,
    make_mode_image,
    make_unsupported_image,
    one_pixel_image,
    rgb_pixels,
)

# --- load_image --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "P", "1"])
def test_load_image_keeps_the_mode_and_the_colours(mode: str, tmp_path: Path) -> None:
    path = make_mode_image(tmp_path, mode)
    src = load_image(path)
    assert src.mode == mode
    with Image.open(path) as im:
        assert np.array_equal(src.pixels, np.asarray(im.convert("RGB")))
        if mode == "P":
            assert src.palette is not None and len(src.palette) == PALETTE_SIZE
            used = im.getpalette("RGB")
            assert src.palette[: len(used)] == bytes(used) and not any(src.palette[len(used):])
        else:
            assert src.palette is None
    assert src.pixels.shape == (37, 53, 3) and src.pixels.dtype == np.uint8


@pytest.mark.parametrize("path", [KODIM20, KODIM08, SAMPLE], ids=lambda p: p.stem)
def test_load_image_rgb_files(path: Path) -> None:
    src = load_image(path)
    assert src.mode == "RGB" and src.palette is None
    assert np.array_equal(src.pixels, rgb_pixels(path))


def test_load_image_arrays() -> None:
    rgb = rgb_pixels(KODIM20)
    assert load_image(rgb).mode == "RGB"
    grey = rgb[..., 0].copy()
    src = load_image(grey)
    assert src.mode == "L"
    assert np.array_equal(src.pixels, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize(
    "array",
    [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 3), np.uint16),
     np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8), np.zeros(5, np.uint8)],
    ids=["rgba", "float", "uint16", "no-rows", "no-columns", "1d"],
)
def test_load_image_refuses_bad_arrays(array: np.ndarray) -> None:
    with pytest.raises(BadInputError):
        load_image(array)


UNSUPPORTED = ["RGBA", "I;16", "CMYK", "LA", "I", "P+transparency"]


@pytest.mark.parametrize("mode", UNSUPPORTED)
def test_unsupported_modes_are_refused_with_a_reason(mode: str, tmp_path: Path, tiny_model: Path) -> None:
    path = make_unsupported_image(tmp_path, mode)
    with Image.open(path) as im:
        assert im.mode != "RGB"
    with pytest.raises(BadInputError, match="convert it") as e:
        diffcodec.encode(path, model=tiny_model, seed=0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("mode", ["RGBA", "CMYK", "F", "YCbCr", "HSV"])
def test_unsupported_pil_images_are_refused(mode: str) -> None:
    with Image.open(KODIM20) as im:
        other = im.convert("RGB").convert(mode)
    with pytest.raises(BadInputError, match=repr(mode)):
        load_image(other)


def test_not_an_image_missing_file_and_directory(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    with pytest.raises(BadInputError, match="not a readable image"):
        load_image(text)
    with pytest.raises(BadInputError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(BadInputError, match="directory"):
        load_image(tmp_path)
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(KODIM20.read_bytes()[:200])
    with pytest.raises(BadInputError):
        load_image(truncated)


# --- decode_image gives back the original mode ------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "P", "1"])
@pytest.mark.parametrize("source", [KODIM20, KODIM01], ids=lambda p: p.stem)
def test_decode_image_gives_back_the_original_mode_exactly(mode: str, source: Path, tmp_path: Path,
                                                           tiny_model: Path) -> None:
    path = make_mode_image(tmp_path, mode, source)
    data = diffcodec.encode(path, model=tiny_model, seed=5)
    assert read_stream(data).header.mode == mode
    out = diffcodec.decode_image(data, model=tiny_model)
    with Image.open(path) as original:
        assert out.mode == mode and out.size == original.size
        # same colour at every pixel (for P: the palette colours, whatever the index chosen)
        assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(original.convert("RGB")))
        if mode != "P":
            assert np.array_equal(np.asarray(out), np.asarray(original))
    # and it survives being saved as PNG
    saved = tmp_path / "decoded.png"
    out.save(saved)
    with Image.open(saved) as back, Image.open(path) as original:
        assert back.mode == mode
        assert np.array_equal(np.asarray(back.convert("RGB")), np.asarray(original.convert("RGB")))


def test_decode_image_rgb_and_one_pixel(tmp_path: Path, tiny_model: Path) -> None:
    for path in (KODIM20, one_pixel_image(tmp_path)):
        out = diffcodec.decode_image(diffcodec.encode(path, model=tiny_model, seed=1), model=tiny_model)
        assert out.mode == "RGB"
        assert np.array_equal(np.asarray(out), rgb_pixels(path))


@pytest.mark.parametrize("mode, lossy_mode", [("L", "L"), ("P", "RGB"), ("1", "RGB"), ("RGB", "RGB")])
def test_lossy_rungs_are_shown_in_a_displayable_mode(mode: str, lossy_mode: str, tmp_path: Path,
                                                      tiny_model: Path) -> None:
    path = KODIM20 if mode == "RGB" else make_mode_image(tmp_path, mode)
    data = diffcodec.encode(path, model=tiny_model, seed=2)
    for k in range(TINY_STEPS + 1):
        im = diffcodec.decode_image(data, rung=k, model=tiny_model)
        assert im.mode == lossy_mode and im.size == (53, 37)
    assert diffcodec.decode_image(data, rung=TINY_STEPS + 1, model=tiny_model).mode == mode


def test_palette_with_duplicate_colours_keeps_every_colour(tmp_path: Path, tiny_model: Path) -> None:
    """Two indices with one colour: decode may pick either index, but every pixel keeps its colour."""
    index = (np.arange(12 * 10).reshape(12, 10) % 4).astype(np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette([0, 0, 0, 255, 0, 0, 255, 0, 0, 10, 200, 30])  # indices 1 and 2 are both red
    path = tmp_path / "dup.png"
    im.save(path)
    out = diffcodec.decode_image(diffcodec.encode(path, model=tiny_model, seed=0), model=tiny_model)
    assert out.mode == "P"
    assert np.array_equal(np.asarray(out.convert("RGB")), np.asarray(im.convert("RGB")))


def test_to_pil_exact_modes() -> None:
    rgb = rgb_pixels(KODIM20)
    grey = np.repeat(rgb[..., :1], 3, axis=2)
    assert np.array_equal(np.asarray(to_pil(grey, "L", None, exact=True)), grey[..., 0])
    bilevel = np.where(grey > 127, 255, 0).astype(np.uint8)
    out = to_pil(bilevel, "1", None, exact=True)
    assert out.mode == "1" and np.array_equal(np.asarray(out), bilevel[..., 0] > 0)
