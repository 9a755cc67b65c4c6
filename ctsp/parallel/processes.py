"""The processes of a parallel run: ``--workers N`` starts them on this machine, ``torchrun``
(or any launcher that sets torch.distributed's ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``) starts them elsewhere.

A :class:`World` says which process this is: read once from the environment
(:meth:`World.from_environment`), or made by :func:`launch`, which starts ranks 1 … N-1 as
copies of this command (each given its world in its environment) and returns the
:class:`Workers` it started and rank 0's world. :func:`process_group` joins the group (gloo on
CPU, NCCL on CUDA) for the run's length, after checking that the world is as large as the
run's ``parallel.stages`` x ``parallel.replicas``, and yields the run's transport.

Faults in a ``--workers`` run: rank 0 watches its workers and a worker its rank 0
(:meth:`Workers.watch`, :func:`watch_parent`); when one fails (an error, a crash, kill -9) the
others stop within about a second with one line naming it. Under torchrun its agent stops the
other processes. A process that hangs or is stopped without failing is caught by the
heartbeats every process of a group sends through the run's TCP store (:class:`Heartbeat`,
started by :func:`process_group`): the others stop within :func:`hang_timeout` seconds (60 by
default) with one line naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import distributed as dist

from ..environment import read
from ..errors import ConfigError
from .transport import DistTransport, Transport

# how long a process waits for another one's message before it gives up (a stage waits for
# rank 0 through a whole evaluation and checkpoint)
TIMEOUT = datetime.timedelta(minutes=30)
# the environment variable that tells a worker started by --workers which process is rank 0
PARENT = "CTSP_WORKERS_PARENT"


@dataclasses.dataclass(frozen=True)
class World:
    """Which process of a parallel run this is: ``rank`` of ``size``, the group's rendezvous
    at ``address``:``port`` (rank 0's TCP store), and ``parent``, the process id of rank 0
    where ``--workers`` started this one (None otherwise)."""

    rank: int = 0
    size: int = 1
    address: str = "127.0.0.1"
    port: int = 0
    parent: int | None = None

    @classmethod
    def from_environment(cls) -> World:
        """The world a launcher (``--workers``, torchrun) gave this process; one process
        outside a launched run."""
        rank, size = read("RANK"), read("WORLD_SIZE")
        if rank >= size:
            raise ConfigError(
                f"the environment variable RANK={rank} is not below WORLD_SIZE={size}"
            )
        if size == 1:
            return cls()
        parent = os.environ.get(PARENT)
        return cls(
            rank,
            size,
            os.environ.get("MASTER_ADDR", "127.0.0.1"),
            int(os.environ.get("MASTER_PORT", "29500")),
            int(parent) if parent else None,
        )

    def environment(self) -> dict[str, str]:
        """The environment variables that give a process this world."""
        env = {
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.rank),
            "WORLD_SIZE": str(self.size),
            "MASTER_ADDR": self.address,
            "MASTER_PORT": str(self.port),
        }
        return env if self.parent is None else {**env, PARENT: str(self.parent)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(message: str, resumable: Path | None, procs=()) -> None:
    """End this process at once with one line (a blocked collective cannot be interrupted),
    killing ``procs`` (a stopped or hung worker does not end by itself); the line says
    ``--resume`` where ``resumable`` (the run's checkpoint) exists."""
    hint = " (continue it with --resume)" if resumable is not None and resumable.exists() else ""
    for proc in procs:
        proc.kill()
    print(f"ctsp: error: {message}; the run stops{hint}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)


def _watch(check, interval: float, stop) -> None:
    """A thread that calls ``stop(message)`` when ``check()`` returns a message."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            message = check()
            if message:
                stop(message)

    threading.Thread(target=loop, name="ctsp-watch", daemon=True).start()


@dataclasses.dataclass
class Workers:
    """The worker processes (ranks 1 … N-1) that :func:`launch` started, and rank 0's world."""

    world: World
    procs: list[subprocess.Popen]
    checkpoint: Path | None = None  # the run's checkpoint: "--resume" where it exists
    group: str = "the run"  # what the processes are, for messages: "the replicas"
    ending: bool = False  # rank 0 is ending them: their exits are not failures to report

    def stop(self, message: str) -> None:
        """End rank 0 with one line, killing the workers."""
        _stop(message, self.checkpoint, self.procs)

    def watch(self, interval: float = 1.0) -> None:
        """Stop within ``interval`` seconds of a worker's failure (a non-zero exit: an error,
        a crash, kill -9) instead of waiting in a collective."""
        _watch(self.failed, interval, self.stop)

    def failed(self) -> str | None:
        """The line for the first worker that ended with an error, or None."""
        if self.ending:
            return None
        for rank, proc in enumerate(self.procs, start=1):
            code = proc.poll()
            if code:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                return f"rank {rank} of {self.group} {how}"
        return None

    def kill(self) -> None:
        """End the workers now (rank 0 failed; they would wait for it)."""
        self.ending = True
        for proc in self.procs:
            proc.kill()

    def end(self, grace: float) -> str | None:
        """Wait for the workers (``grace`` seconds each, then kill them); the line of the first
        one that failed, or None. ``grace`` 0: rank 0 failed, kill them without a line."""
        if not grace:
            self.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return self.failed()


def launch(
    argv: list[str], workers: int, checkpoint: Path | None = None, group: str = "the run"
) -> Workers:
    """Start ranks 1 … ``workers`` - 1 as ``python -m ctsp *argv`` on this machine (127.0.0.1);
    returns them with this process's world (rank 0). Their standard output is dropped (rank 0
    reports); their errors reach standard error. ``checkpoint``, ``group``: see
    :class:`Workers`."""
    port, parent = _free_port(), os.getpid()
    procs = []
    for rank in range(1, workers):
        child = World(rank, workers, "127.0.0.1", port, parent)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ctsp", *argv],
                env={**os.environ, **child.environment()},
                stdout=subprocess.DEVNULL,
            )
        )
    return Workers(World(0, workers, "127.0.0.1", port), procs, checkpoint, group)


def watch_parent(world: World, checkpoint: Path | None = None, interval: float = 1.0) -> None:
    """A worker started by ``--workers``: stop within ``interval`` seconds of rank 0's end."""
    if world.parent is None:
        return
    parent = world.parent
    _watch(
        lambda: "rank 0 has gone" if os.getppid() != parent else None,
        interval,
        lambda message: _stop(message, checkpoint),
    )


def hang_timeout() -> float:
    """Seconds of silence after which a process of the group is taken as hung:
    ``$CTSP_HANG_TIMEOUT`` (at least ``ctsp.environment.MIN_HANG_TIMEOUT``), else 60."""
    return read("CTSP_HANG_TIMEOUT")


class Heartbeat:
    """Every ``interval`` seconds: count this rank's beat in the run's TCP store (rank 0's, at
    the world's address and port) and read the others' (one thread); stop this process with one
    line when another rank's count has not moved for ``timeout`` seconds (it hangs, or was
    stopped), or when the store has not answered for as long (rank 0 hangs: a store call then
    blocks) (a second thread, :func:`_watch`). Threads of their own, so a long evaluation or
    checkpoint keeps beating. A closed connection ends the beats quietly: the run is ending,
    or a process died, which :meth:`Workers.watch` / :func:`watch_parent` or the backend's
    messages report. A rank that leaves the group (:meth:`stop`) is no longer watched.
    ``stop(line)`` ends the process (:meth:`Workers.stop` on rank 0 of a ``--workers`` run)."""

    def __init__(self, world: World, timeout: float, stop, interval: float = 1.0) -> None:
        self.rank, self.timeout, self.interval = world.rank, timeout, interval
        self.store = dist.TCPStore(world.address, world.port, is_master=False)
        now = time.monotonic()
        self._count = {r: -1 for r in range(world.size) if r != world.rank}
        self._heard = dict.fromkeys(self._count, now)  # when each rank's count last moved
        self._answered = now  # when the store last answered
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ctsp-heartbeat", daemon=True)
        self._thread.start()
        _watch(self._silent, interval, stop)

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
def process_group(
    world: World, size: int, device: torch.device, workers: Workers | None = None
) -> Iterator[Transport | None]:
    """Join ``world``'s group of ``size`` processes for the block, with a :class:`Heartbeat`
    (nothing for one process); yields the run's transport (None for one process). A world of
    another size is refused. ``workers``: the processes rank 0 started, killed when a hang
    stops it."""
    if world.size != size:
        raise ConfigError(
            f"the run needs {size} process(es) (parallel.stages x parallel.replicas) but "
            f"{world.size} were started: use --workers {size} or torchrun --nproc-per-node "
            f"{size}"
        )
    if size == 1:
        yield None
        return
    timeout = hang_timeout()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend,
        init_method=f"tcp://{world.address}:{world.port}",
        rank=world.rank,
        world_size=size,
        timeout=TIMEOUT,
    )
    checkpoint = workers.checkpoint if workers else None
    stop = workers.stop if workers else (lambda message: _stop(message, checkpoint))
    beat = Heartbeat(world, timeout, stop)
    try:
        yield DistTransport(device)
    except BaseException:
        if workers is not None:  # they wait for rank 0: end them before the group goes
            workers.kill()
        raise
    finally:
        beat.stop()
        dist.destroy_process_group()
