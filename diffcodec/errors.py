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


class ReconstructionCheckError(BitstreamError):
    """Rung `rung` decodes to other pixels than the encoder saw there (its stored reconstruction check): the file
    was written on another kind of machine (CPU family, GPU, thread count or torch build), or changed in a way its
    chunk checks did not catch."""

    def __init__(self, message: str, rung: int) -> None:
        super().__init__(message)
        self.rung = rung


class ModelError(DiffcodecError):
    """The model cannot be found, cannot be loaded, or is not the one a stream was coded with."""
