"""Bit-identical network outputs in encoder and decoder, whatever torch's thread count.

With more than one intra-op thread, torch's CPU convolutions split their sums differently, so eps_hat
differs in the last bits between, say, 1 and 2 threads (measured: most elements of eps_hat differ by
up to ~2e-6 for the default model). Encoder and decoder must compute the same priors and tables, so the
codec runs the network with one intra-op thread, the only count every machine can reproduce. What is
left (another CPU family, a GPU, another torch build) is caught by the per-rung reconstruction checks
of the container (docs/format.md).

Threads: under OpenMP (torch's CPU backend here) the count is per Python thread, and a new thread takes
the process-wide count when it first runs a torch op. The encoder's coding worker (codec.encode_report,
overlap=True) is started inside one `one_thread` that spans the whole encode, so it starts at one thread,
its own `one_thread` uses are no-ops, and nobody restores the count while the other thread computes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["one_thread"]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the body with one torch intra-op thread, then restore the caller's count."""
    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)
