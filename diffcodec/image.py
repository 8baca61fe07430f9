"""Image files <-> uint8 RGB pixels, remembering the original mode so decode can give it back.

What is coded is the raster as stored in the file (what PIL's `Image.open` gives): an EXIF orientation
tag is neither applied nor kept. Anything that cannot be given back exactly is refused with a
BadInputError saying how to convert it: alpha (RGBA, LA, PA, a palette with transparency), more than
8 bits per sample (16-bit PNG and TIFF, which PIL would otherwise silently cut to 8 bits), CMYK and
other colour spaces, float images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .bitstream import PALETTE_SIZE
from .errors import BadInputError

SUPPORTED_MODES = ("RGB", "L", "P", "1")


@dataclass(frozen=True)
class SourceImage:
    """Pixels as (H, W, 3) uint8 RGB plus what is needed to give back the original mode."""

    pixels: np.ndarray
    mode: str
    palette: bytes | None = None


_CONVERT = "diffcodec codes 8-bit RGB, grayscale (L), palette (P) and bilevel (1) images"


def _more_than_8_bits(im: Image.Image) -> bool:
    """True for 16-bit samples, including 16-bit RGB PNGs that PIL opens as 8-bit "RGB" (raw mode RGB;16B)."""
    rawmodes = [tile[3] if isinstance(tile[3], str) else tile[3][0] for tile in getattr(im, "tile", []) if tile[3]]
    return im.mode.startswith("I;16") or any(isinstance(r, str) and ";16" in r for r in rawmodes)


def _refusal(im: Image.Image) -> str | None:
    """Why `im` cannot be coded exactly (None if it can)."""
    if _more_than_8_bits(im):
        return (f"the image has 16 bits per sample (mode {im.mode!r}): {_CONVERT}, and keeping only the top 8 "
                "bits would not be lossless; convert it to 8 bits first if that loss is acceptable")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return (f"unsupported image mode {im.mode!r}: the image has an alpha channel, which diffcodec does not "
                f"code; convert it first, e.g. to RGB (flattening the transparency)")
    if im.mode == "CMYK":
        return (f"unsupported image mode 'CMYK': {_CONVERT}; convert it first to RGB with a colour-managed "
                "tool (e.g. ImageMagick -colorspace sRGB)")
    if im.mode not in SUPPORTED_MODES:
        return f"unsupported image mode {im.mode!r}: {_CONVERT}; convert it first, e.g. to RGB"
    if im.mode == "P" and ("transparency" in im.info or im.palette.mode != "RGB"):
        return "palette image with transparency or a non-RGB palette: convert it to RGB first"
    return None


def _from_pil(im: Image.Image) -> SourceImage:
    reason = _refusal(im)
    if reason:
        raise BadInputError(reason)
    palette = None
    if im.mode == "P":
        palette = bytes(im.getpalette("RGB") or []).ljust(PALETTE_SIZE, b"\0")[:PALETTE_SIZE]
    pixels = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return SourceImage(np.ascontiguousarray(pixels), im.mode, palette)


def load_image(source: str | Path | Image.Image | np.ndarray) -> SourceImage:
    """Read an image file, PIL image or (H, W, 3) / (H, W) uint8 array; raise BadInputError if it cannot be coded."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] != 3):
            raise BadInputError(f"expected a uint8 array of shape (H, W, 3) or (H, W), got {source.dtype} {source.shape}")
        if source.shape[0] < 1 or source.shape[1] < 1:
            raise BadInputError("empty image")
        return _from_pil(Image.fromarray(source))
    if isinstance(source, Image.Image):
        return _from_pil(source)
    path = Path(source)
    if path.is_dir():
        raise BadInputError(f"{path} is a directory, not an image")
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    try:
        if path.stat().st_size == 0:
            raise BadInputError(f"{path} is empty, not an image")
        with Image.open(path) as im:
            reason = _refusal(im)  # before load(): a 16-bit PNG loads as 8-bit RGB
            if reason:
                raise BadInputError(f"{path}: {reason}")
            im.load()
            return _from_pil(im)
    except Image.DecompressionBombError as e:
        raise BadInputError(f"{path}: too many pixels to load safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadInputError(f"{path}: not a readable image ({e})") from None


def to_pil(pixels: np.ndarray, mode: str, palette: bytes | None, exact: bool) -> Image.Image:
    """Give back the original mode: exactly at the lossless rung, as RGB (or luma for L) at lossy rungs."""
    rgb = Image.fromarray(pixels, "RGB")
    if mode == "L":
        return rgb.getchannel(0) if exact else rgb.convert("L")
    if not exact or mode == "RGB":
        return rgb
    if mode == "1":
        return rgb.getchannel(0).convert("1", dither=Image.Dither.NONE)
    # mode P: map every colour to its first index in the palette
    assert palette is not None
    table = np.frombuffer(palette, np.uint8).reshape(-1, 3).astype(np.int64)
    keys = (table[:, 0] << 16) | (table[:, 1] << 8) | table[:, 2]
    first = {int(k): i for i, k in reversed(list(enumerate(keys)))}
    flat = pixels.reshape(-1, 3).astype(np.int64)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    uniq, inverse = np.unique(codes, return_inverse=True)
    index = np.array([first[int(c)] for c in uniq], dtype=np.uint8)[inverse].reshape(pixels.shape[:2])
    out = Image.fromarray(index, "P")
    out.putpalette(palette)
    return out
