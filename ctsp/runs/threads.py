"""The CPU threads of a run (``threads``, ``--threads N``): torch's and numba's pools together.

numba's OpenMP threading layer shares the OpenMP runtime that torch loaded, and starting it sets
the OpenMP thread count that torch reads to numba's default (one thread per core). The CHL
kernel makes numba follow torch's count (``ctsp.continuous.plasticity.follow_torch_threads``);
:func:`cpu_threads` sets both for the run's length, numba first and torch second.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numba
import torch

from ..errors import ConfigError


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _set(torch_threads: int, numba_threads: int) -> None:
    numba.set_num_threads(numba_threads)  # first: starting numba's layer sets OpenMP's count
    torch.set_num_threads(torch_threads)


@contextlib.contextmanager
def cpu_threads(threads: int) -> Iterator[int]:
    """Run with ``threads`` torch threads (0: as many as torch has now) and as many numba
    threads (at most ``NUMBA_NUM_THREADS``, numba's pool size, fixed at import); both counts
    are restored afterwards. Yields the torch thread count. More threads than
    :func:`usable_cores` are refused: they only wait for each other (1000 threads on 2 cores
    ran about 100x slower)."""
    cores = usable_cores()
    if threads > cores:
        raise ConfigError(
            f"invalid value for threads: {threads} (this process may use {cores} CPU "
            f"core{'s' if cores > 1 else ''}; more threads than cores only wait for each other: "
            f"use 1-{cores}, or 0 for torch's count)"
        )
    before = torch.get_num_threads(), numba.get_num_threads()
    want = threads or before[0]
    _set(want, min(want, numba.config.NUMBA_NUM_THREADS))
    try:
        yield want
    finally:
        _set(*before)
