"""Rate tables and the entropy coder; the only place in diffcodec that imports constriction.

Round trip (symbols under per-symbol discretized logistics, DESIGN.md section 2):

    >>> import numpy as np
    >>> from diffcodec.entropy import encode_symbols, decode_symbols
    >>> k = np.array([0, 3, -1]); mean = np.array([0.2, 2.6, -0.4]); scale = np.ones(3)
    >>> payload, bits = encode_symbols(k, mean, scale)
    >>> assert (decode_symbols(payload, mean, scale) == k).all()
"""

from diffcodec.entropy.coder import decode_symbols, encode_symbols
from diffcodec.entropy.tables import (
    ESCAPE_BITS,
    PRECISION,
    WINDOW_SCALES,
    RateTable,
    information_bits,
    pmf_rows,
    rate_table,
    symbol_columns,
    symbol_windows,
    window_bases,
)

__all__ = [
    "ESCAPE_BITS",
    "PRECISION",
    "WINDOW_SCALES",
    "RateTable",
    "decode_symbols",
    "encode_symbols",
    "information_bits",
    "pmf_rows",
    "rate_table",
    "symbol_columns",
    "symbol_windows",
    "window_bases",
]
