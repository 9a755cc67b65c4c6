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
last checkpoint. Under torchrun its agent stops the other processes. A process that hangs or
is stopped without failing is caught by the heartbeats every process of a group sends through
the run's TCP store (:class:`Heartbeat`, started by :func:`process_group`): the others stop
within :func:`hang_timeout` seconds (60 by default) with one line naming it.
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

from ..environment import read
from ..errors import ConfigError

# how long a process waits for another one's message before it gives up (a stage waits for
# rank 0 through a whole evaluation and checkpoint)
TIMEOUT = datetime.timedelta(minutes=30)
# the environment variable that tells a worker started by --workers which process is rank 0
PARENT = "CTSP_WORKERS_PARENT"
# the workers this process started (launch): stopped with it
_STARTED: list[subprocess.Popen] = []


def world() -> tuple[int, int]:
    """(rank, world size) from the environment; (0, 1) outside a launched run."""
    rank, size = read("RANK"), read("WORLD_SIZE")
    if rank >= size:
        raise ConfigError(f"the environment variable RANK={rank} is not below WORLD_SIZE={size}")
    return rank, size


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
    _STARTED.extend(procs)
    return procs


def _stop(message: str) -> None:
    """End this process at once with one line (a blocked collective cannot be interrupted;
    the run's checkpoint is written atomically, so ``--resume`` continues it)."""
    print(f"ctsp: error: {message}; the run stops (continue it with --resume)", file=sys.stderr)
    sys.stderr.flush()
    for proc in _STARTED:  # a stopped or hung worker does not end by itself
        proc.kill()
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


def hang_timeout() -> float:
    """Seconds of silence after which a process of the group is taken as hung:
    ``$CTSP_HANG_TIMEOUT`` (at least ``ctsp.environment.MIN_HANG_TIMEOUT``), else 60."""
    return read("CTSP_HANG_TIMEOUT")


class Heartbeat:
    """Every ``interval`` seconds: count this rank's beat in the run's TCP store (rank 0's, at
    ``MASTER_ADDR:MASTER_PORT``) and read the others' (one thread); stop this process with one
    line when another rank's count has not moved for ``timeout`` seconds (it hangs, or was
    stopped), or when the store has not answered for as long (rank 0 hangs: a store call then
    blocks) (a second thread, :func:`_watch`). Threads of their own, so a long evaluation or
    checkpoint keeps beating. A closed connection ends the beats quietly: the run is ending,
    or a process died, which :func:`watch_workers` / :func:`watch_parent` or the backend's
    messages report. A rank that leaves the group (:meth:`stop`) is no longer watched."""

    def __init__(self, rank: int, size: int, timeout: float, interval: float = 1.0) -> None:
        self.rank, self.timeout, self.interval = rank, timeout, interval
        self.store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False
        )
        now = time.monotonic()
        self._count = {r: -1 for r in range(size) if r != rank}
        self._heard = dict.fromkeys(self._count, now)  # when each rank's count last moved
        self._answered = now  # when the store last answered
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ctsp-heartbeat", daemon=True)
        self._thread.start()
        _watch(self._silent, interval)

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.store.add(f"ctsp/beat/{self.rank}", 1)
                counts = {r: self.store.add(f"ctsp/beat/{r}", 0) for r in self._count}
            except (dist.DistError, RuntimeError):
                return
            now = self._answered = time.monotonic()
            for r, count in counts.items():
                if count != self._count[r]:
                    self._count[r], self._heard[r] = count, now

    def _silent(self) -> str | None:
        """The line for a rank not heard of (or a store not answering) for ``timeout`` s."""
        now = time.monotonic()
        if self._done.is_set():
            return None
        if now - self._answered > self.timeout:
            return f"rank 0 has not answered for {self.timeout:.0f} s (hung or stopped)"
        for r, heard in self._heard.items():
            if self._count[r] >= 0 and now - heard > self.timeout:
                return f"rank {r} has not been heard of for {self.timeout:.0f} s (hung or stopped)"
        return None

    def stop(self) -> None:
        """Stop beating and watching; the others stop watching this rank (its count < 0)."""
        self._done.set()
        with contextlib.suppress(dist.DistError, RuntimeError):
            self.store.add(f"ctsp/beat/{self.rank}", -(2**40))


@contextlib.contextmanager
def process_group(size: int, device: torch.device) -> Iterator[int]:
    """Join the world of ``size`` processes for the block (nothing for ``size`` 1 outside a
    launched run), with a :class:`Heartbeat`; yields this process's rank. A world of another
    size is refused."""
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
    timeout = hang_timeout()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=size, timeout=TIMEOUT)
    beat = Heartbeat(rank, size, timeout)
    try:
        yield rank
    finally:
        beat.stop()
        dist.destroy_process_group()
