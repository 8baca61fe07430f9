"""The codecs people use, each as encode(pixels, setting) -> bytes and decode(bytes) -> pixels.

Lossy sweeps: JPEG (Pillow/libjpeg, quality, 4:2:0), WebP (Pillow/libwebp, quality, method 6), AVIF
(imagecodecs/libavif, quality, speed 6, 4:4:4), JPEG XL (imagecodecs/libjxl, distance, effort 7) and
JPEG 2000 (Pillow/OpenJPEG, 9/7 + colour transform mct=1, one rate-targeted file per target bpp).
Lossless: PNG (optimize), WebP lossless (method 6), JPEG 2000 reversible (5/3, mct=1), JPEG XL (effort 7).
Every encoder runs on one thread so the bytes do not depend on the machine's core count.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import imagecodecs
import numpy as np
from PIL import Image

from . import j2k

Encode = Callable[[np.ndarray, float], bytes]


@dataclass(frozen=True)
class Codec:
    """A codec and the settings it is swept over (the last one closest to lossless)."""

    name: str
    setting: str  # what the sweep varies
    settings: tuple[float, ...]
    encode: Encode


def pil_encode(pixels: np.ndarray, **options: object) -> bytes:
    """Pillow: save (H, W, 3) uint8 pixels with the given format and options."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, **options)
    return buf.getvalue()


def decode(data: bytes) -> np.ndarray:
    """Any baseline file -> (H, W, 3) uint8 (AVIF and JPEG XL through imagecodecs, the rest through Pillow)."""
    if imagecodecs.avif_check(data):
        return imagecodecs.avif_decode(data, numthreads=1)
    if imagecodecs.jpegxl_check(data):
        return imagecodecs.jpegxl_decode(data, numthreads=1)
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


J2K_BPPS = (0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # targets, rate-targeted and layers
QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)

LOSSY = (
    Codec("JPEG", "quality", QUALITIES, lambda p, q: pil_encode(p, format="JPEG", quality=int(q))),
    Codec("WebP", "quality", QUALITIES + (100,), lambda p, q: pil_encode(p, format="WEBP", quality=int(q), method=6)),
    Codec("AVIF", "quality", QUALITIES,
          lambda p, q: imagecodecs.avif_encode(p, level=int(q), speed=6, pixelformat="444", numthreads=1)),
    Codec("JPEG XL", "distance", (16.0, 12.0, 8.0, 6.0, 4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25),
          lambda p, d: imagecodecs.jpegxl_encode(p, distance=d, effort=7, numthreads=1)),
    Codec("JPEG 2000", "target bpp", J2K_BPPS,
          lambda p, b: pil_encode(p, format="JPEG2000", no_jp2=True, irreversible=True, mct=1, quality_mode="rates",
                                  quality_layers=[j2k.RAW_BITS_PER_PIXEL / b])),
)

LOSSLESS: dict[str, Callable[[np.ndarray], bytes]] = {
    "PNG": lambda p: pil_encode(p, format="PNG", optimize=True),
    "WebP lossless": lambda p: pil_encode(p, format="WEBP", lossless=True, quality=100, method=6),
    "JPEG 2000 reversible": lambda p: pil_encode(p, format="JPEG2000", no_jp2=True, irreversible=False, mct=1),
    "JPEG XL lossless": lambda p: imagecodecs.jpegxl_encode(p, lossless=True, effort=7, numthreads=1),
}

J2K_LAYERS = "JPEG 2000 layers"  # ONE file with a quality layer per J2K_BPPS target, decoded layer by layer


def j2k_layer_files(pixels: np.ndarray) -> list[bytes]:
    """The progressive JPEG 2000 file and its valid prefixes: element L - 1 holds the first L layers."""
    data = j2k.encode_layers(pixels, list(J2K_BPPS))
    n = len(J2K_BPPS)
    return [j2k.layer_prefix(data, layers, n) for layers in range(1, n)] + [data]
