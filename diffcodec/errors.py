"""One exception tree for everything diffcodec refuses or cannot do.

The CLI turns any `DiffcodecError` into one line on stderr; anything else is a bug.
"""


class DiffcodecError(Exception):
    """Base class of every error diffcodec raises on purpose."""

    exit_code = 1


class BadInputError(DiffcodecError):
    """The input image (or argument) cannot be coded: not an image, unsupported mode, ..."""


class BitstreamError(DiffcodecError):
    """The stream is not a diffcodec file, is truncated inside its header, or is corrupt."""


class ModelError(DiffcodecError):
    """The model cannot be found, cannot be loaded, or is not the one a stream was coded with."""
