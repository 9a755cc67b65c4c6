"""The CPU threads of a run (``threads``, ``--threads N``): torch's and numba's pools together.

numba's OpenMP threading layer shares the OpenMP runtime that torch loaded, so
``numba.set_num_threads`` also sets the OpenMP thread count that torch reads: left alone, numba's
default (one thread per core) would override a ``torch.set_num_threads`` of the user's and run
its kernels on more threads than torch's. :func:`cpu_threads` sets numba first and torch second,
to the same count, for the run's length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numba
import torch


def _set(torch_threads: int, numba_threads: int) -> None:
    numba.set_num_threads(numba_threads)  # first: it also sets OpenMP's count, torch's
    torch.set_num_threads(torch_threads)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[int]:
    """Run with ``threads`` torch threads (0: as many as torch has now) and as many numba
    threads (at most ``NUMBA_NUM_THREADS``, numba's pool size, fixed at import); both counts
    are restored afterwards. Yields the torch thread count."""
    before = torch.get_num_threads(), numba.get_num_threads()
    want = threads or before[0]
    _set(want, min(want, numba.config.NUMBA_NUM_THREADS))
    try:
        yield want
    finally:
        _set(*before)
