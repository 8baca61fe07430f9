"""diffcodec: a progressive image codec built on a universally quantized diffusion model.

    >>> import diffcodec
    >>> data = diffcodec.encode("photo.png")            # doctest: +SKIP
    >>> pixels = diffcodec.decode(data)                 # the last rung present: exact if complete
    >>> rungs = diffcodec.decode_rungs(data)            # every rung with its bytes and bpp
"""

from .codec import (
    EncodeResult,
    Rung,
    decode,
    decode_image,
    decode_rungs,
    encode,
    encode_report,
    iter_rungs,
    psnr,
)
from .errors import BadInputError, BitstreamError, DiffcodecError, ModelError, ReconstructionCheckError

__all__ = [
    "BadInputError",
    "BitstreamError",
    "DiffcodecError",
    "EncodeResult",
    "ModelError",
    "ReconstructionCheckError",
    "Rung",
    "decode",
    "decode_image",
    "decode_rungs",
    "encode",
    "encode_report",
    "iter_rungs",
    "psnr",
]
