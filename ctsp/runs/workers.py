"""The processes of a parallel run: ``--workers N`` starts them on this machine, ``torchrun``
(or any launcher that sets torch.distributed's environment) starts them elsewhere.

Both give every process torch.distributed's ``env://`` variables: ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``. :func:`launch` starts ranks 1 … N-1 as copies of this command
and makes this process rank 0; :func:`process_group` joins the group (gloo on CPU, NCCL on
CUDA) for the run's length, after checking that the world is as large as the run's
``parallel.stages`` x ``parallel.replicas``.

Faults in a ``--workers`` run: rank 0 watches its workers and a worker its rank 0
(:func:`watch_workers`, :func:`watch_parent`); when one fails (an error, a crash, kill -9) the
others stop within about a second with one line naming it, and ``--resume`` continues from the
last checkpoint. Under torchrun its agent stops the other processes. A process that hangs
without failing is caught only by torch.distributed's :data:`TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import torch
from torch import distributed as dist

from ..errors import ConfigError

# how long a process waits for another one's message before it gives up (a stage waits for
# rank 0 through a whole evaluation and checkpoint)
TIMEOUT = datetime.timedelta(minutes=30)
# the environment variable that tells a worker started by --workers which process is rank 0
PARENT = "CTSP_WORKERS_PARENT"


def world() -> tuple[int, int]:
    """(rank, world size) from the environment; (0, 1) outside a launched run."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], workers: int) -> list[subprocess.Popen]:
    """Start ranks 1 … ``workers`` - 1 as ``python -m ctsp *argv`` on this machine (127.0.0.1)
    and make this process rank 0 of the same world; returns the started processes. Their
    standard output is dropped (rank 0 reports); their errors reach standard error."""
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "WORLD_SIZE": str(workers),
    }
    procs = []
    for rank in range(1, workers):
        child = {**os.environ, **env, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        child[PARENT] = str(os.getpid())
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ctsp", *argv], env=child, stdout=subprocess.DEVNULL
            )
        )
    os.environ.update(env, RANK="0", LOCAL_RANK="0")
    return procs


def _stop(message: str) -> None:
    """End this process at once with one line (a blocked collective cannot be interrupted;
    the run's checkpoint is written atomically, so ``--resume`` continues it)."""
    print(f"ctsp: error: {message}; the run stops (continue it with --resume)", file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)


def _watch(check, interval: float) -> None:
    def loop() -> None:
        while True:
            time.sleep(interval)
            message = check()
            if message:
                _stop(message)

    threading.Thread(target=loop, name="ctsp-watch", daemon=True).start()


def watch_workers(procs: list[subprocess.Popen], interval: float = 1.0) -> None:
    """Rank 0 of a ``--workers`` run: stop within ``interval`` seconds of a worker's failure
    (a non-zero exit: an error, a crash, kill -9) instead of waiting in a collective."""

    def failed() -> str | None:
        for rank, proc in enumerate(procs, start=1):
            code = proc.poll()
            if code:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                return f"worker rank {rank} {how}"
        return None

    _watch(failed, interval)


def watch_parent(interval: float = 1.0) -> None:
    """A worker started by ``--workers``: stop within ``interval`` seconds of rank 0's end."""
    parent = os.environ.get(PARENT)
    if parent is None:
        return
    _watch(lambda: "rank 0 has gone" if os.getppid() != int(parent) else None, interval)


@contextlib.contextmanager
def process_group(size: int, device: torch.device) -> Iterator[int]:
    """Join the world of ``size`` processes for the block (nothing for ``size`` 1 outside a
    launched run); yields this process's rank. A world of another size is refused."""
    rank, world_size = world()
    if world_size != size:
        raise ConfigError(
            f"the run needs {size} process(es) (parallel.stages x parallel.replicas) but "
            f"{world_size} were started: use --workers {size} or torchrun --nproc-per-node "
            f"{size}"
        )
    if size == 1:
        yield 0
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=TIMEOUT)
    try:
        yield rank
    finally:
        dist.destroy_process_group()
