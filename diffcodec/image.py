"""Image files <-> uint8 RGB pixels, remembering the original mode so decode can give it back."""

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


def _from_pil(im: Image.Image) -> SourceImage:
    if im.mode not in SUPPORTED_MODES:
        raise BadInputError(
            f"unsupported image mode {im.mode!r}: diffcodec codes 8-bit RGB, grayscale (L), palette (P) "
            "and bilevel (1) images; convert it first, e.g. to RGB"
        )
    if im.mode == "P" and ("transparency" in im.info or im.palette.mode != "RGB"):
        raise BadInputError("palette image with transparency or a non-RGB palette: convert it to RGB first")
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
        with Image.open(path) as im:
            im.load()
            return _from_pil(im)
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
