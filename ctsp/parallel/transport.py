"""How the processes of a parallel run talk: typed messages to one peer, sums and gathers over all.

A :class:`Transport` sends and receives the messages of :mod:`ctsp.parallel.messages` and sums
or gathers tensors over the world. :class:`DistTransport` goes through torch.distributed (gloo
on CPU, NCCL on CUDA; the group joined by :func:`ctsp.parallel.process_group`): a message is a
header and a payload tensor sent without waiting (``isend``; at most :data:`WINDOW` messages
in flight), pickled only where it holds a whole state. :class:`LocalTransport` connects the
ranks of one process (threads, :func:`run_local`), through the same encoding, so that every
backend and the message protocol are tested without starting processes.

A peer that stops answering becomes one :class:`ctsp.errors.WorkerError` naming its rank and
the backend's group ("the layer pipeline", "the replicas").
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor
from torch import distributed as dist

from ..errors import WorkerError
from .messages import HEADER, decode, encode, objects_in, payload_size

# sends in flight per transport before the oldest is waited for
WINDOW = 4
# seconds an in-process rank waits for a message or a collective before it gives up
LOCAL_TIMEOUT = 120.0


class Transport(Protocol):
    """Messages between the ranks of one world (``rank`` of ``size``)."""

    rank: int
    size: int
    group: str  # what the ranks are, for messages: "the layer pipeline", "the replicas"

    def send(self, message, dst: int) -> None: ...

    def recv(self, src: int) -> Any: ...

    def all_reduce(self, tensor: Tensor) -> None:
        """Sum ``tensor`` over the ranks, in place."""

    def all_gather(self, tensor: Tensor) -> list[Tensor]: ...

    def flush(self) -> None:
        """Wait until every message sent has left."""


def _lost(peer: int | None, group: str) -> WorkerError:
    who = f"rank {peer} of {group}" if peer is not None else f"a rank of {group}"
    return WorkerError(f"{who} stopped answering (its connection closed)")


@contextlib.contextmanager
def _answering(peer: int | None, group: str):
    """A lost connection to ``peer`` (None: some rank of a collective) as one WorkerError."""
    try:
        yield
    except RuntimeError as e:
        text = str(e).lower()
        if not any(word in text for word in ("gloo", "connection", "nccl", "closed", "peer")):
            raise
        raise _lost(peer, group) from None


class DistTransport:
    """A :class:`Transport` over the default torch.distributed group, tensors on ``device``."""

    def __init__(self, device: torch.device, group: str = "the run") -> None:
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device, self.group = device, group
        self._pending: list[tuple] = []

    def send(self, message, dst: int) -> None:
        encoded = encode(message, self.device)
        header = encoded.header
        with _answering(dst, self.group):
            works = [dist.isend(header, dst)]
            if encoded.payload is not None:
                works.append(dist.isend(encoded.payload, dst))
            if encoded.objects:
                dist.send_object_list(list(encoded.objects), dst, device=self.device)
            self._pending.append((works, header, encoded.payload))
            while len(self._pending) > WINDOW:
                for work in self._pending.pop(0)[0]:
                    work.wait()

    def recv(self, src: int) -> Any:
        header = torch.empty(HEADER, dtype=torch.int64, device=self.device)
        with _answering(src, self.group):
            dist.recv(header, src)
            payload = None
            if payload_size(header):
                payload = torch.empty(payload_size(header), dtype=torch.uint8, device=self.device)
                dist.recv(payload, src)
            objects = [None] * objects_in(header)
            if objects:
                dist.recv_object_list(objects, src, device=self.device)
        return decode(header, payload, objects)

    @property
    def _others(self) -> int | None:
        """The rank a collective waits for, where there is one other (else None)."""
        return 1 - self.rank if self.size == 2 else None

    def all_reduce(self, tensor: Tensor) -> None:
        with _answering(self._others, self.group):
            dist.all_reduce(tensor)

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        every = [torch.empty_like(tensor) for _ in range(self.size)]
        with _answering(self._others, self.group):
            dist.all_gather(every, tensor)
        return every

    def flush(self) -> None:
        with _answering(self._others, self.group):
            for works, *_ in self._pending:
                for work in works:
                    work.wait()
        self._pending.clear()


class LocalWorld:
    """What the :class:`LocalTransport` ranks of one process share: a queue per (source,
    destination) and a barrier with a slot per rank for the collectives."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.queues = {(s, d): queue.Queue() for s in range(size) for d in range(size)}
        self.barrier = threading.Barrier(size, timeout=LOCAL_TIMEOUT)
        self.slots: list[Tensor | None] = [None] * size

    def transport(self, rank: int, group: str = "the run") -> LocalTransport:
        return LocalTransport(self, rank, group)


class LocalTransport:
    """A :class:`Transport` between threads of one process (rank ``rank`` of ``world``); every
    message goes through :func:`~ctsp.parallel.messages.encode` and ``decode`` as over gloo,
    the objects deep-copied."""

    def __init__(self, world: LocalWorld, rank: int, group: str = "the run") -> None:
        self.world, self.rank, self.size, self.group = world, rank, world.size, group

    def send(self, message, dst: int) -> None:
        encoded = encode(message)
        payload = None if encoded.payload is None else encoded.payload.clone()
        item = (encoded.header.clone(), payload, copy.deepcopy(encoded.objects))
        self.world.queues[(self.rank, dst)].put(item)

    def recv(self, src: int) -> Any:
        try:
            header, payload, objects = self.world.queues[(src, self.rank)].get(
                timeout=LOCAL_TIMEOUT
            )
        except queue.Empty:
            raise _lost(src, self.group) from None
        return decode(header, payload, objects)

    def _gathered(self, tensor: Tensor) -> list[Tensor]:
        try:
            self.world.slots[self.rank] = tensor.clone()
            self.world.barrier.wait()
            every = [t.clone() for t in self.world.slots]
            self.world.barrier.wait()
        except threading.BrokenBarrierError:
            raise _lost(None, self.group) from None
        return every

    def all_reduce(self, tensor: Tensor) -> None:
        every = self._gathered(tensor)
        total = every[0]
        for t in every[1:]:
            total = total + t
        tensor.copy_(total)

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        return self._gathered(tensor)

    def flush(self) -> None:
        """Nothing in flight: a send has left when it returns."""


def run_local(size: int, work: Callable[[int, LocalWorld], Any]) -> list[Any]:
    """``work(rank, world)`` for every rank of a :class:`LocalWorld` of ``size``, each in a thread
    of this process; returns their results by rank and raises the first error (by rank)."""
    world = LocalWorld(size)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def body(rank: int) -> None:
        try:
            results[rank] = work(rank, world)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors[rank] = e
            world.barrier.abort()

    threads = [threading.Thread(target=body, args=(r,), name=f"rank-{r}") for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results
