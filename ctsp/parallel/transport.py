"""How the processes of a parallel run talk: typed messages to one peer, sums and gathers over all.

A :class:`Transport` sends and receives the messages of :mod:`ctsp.parallel.messages` and sums
or gathers tensors over the world. :class:`DistTransport` goes through torch.distributed (gloo
on CPU, NCCL on CUDA; the group joined by :func:`ctsp.parallel.process_group`): a message is a
frame sent without waiting (``isend``; at most :data:`WINDOW` messages in flight).
:class:`LocalTransport` connects the ranks of one process (threads, :func:`run_local`),
through the same encoding, so that every backend and the message protocol are tested without
starting processes.

A peer that stops answering becomes one :class:`ctsp.errors.WorkerError` naming its rank and
the backend's group ("the layer pipeline", "the replicas").
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor
from torch import distributed as dist

from ..errors import WorkerError
from .messages import FRAME, GROW, HEADER, decode, encode, grow_frame, payload_size

# sends in flight per transport before the oldest is waited for
WINDOW = 4
# the smallest receive buffer (bytes): messages up to this size never need a GROW frame
MIN_CAPACITY = 1 << 16
# seconds an in-process rank waits for a message or a collective before it gives up
LOCAL_TIMEOUT = 120.0


class Transport(Protocol):
    """Messages between the ranks of one world (``rank`` of ``size``)."""

    rank: int
    size: int
    group: str  # what the ranks are, for messages: "the layer pipeline", "the replicas"

    def send(self, message, dst: int) -> None: ...

    def recv(self, src: int) -> Any: ...

    def expect(self, src: int) -> None:
        """A message from ``src`` will come: start receiving it now (optional; ``recv`` takes
        the messages in order either way). Expect several at once only of messages no larger
        than the ones ``src`` sent before (or than 64 kB)."""

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
    """A :class:`Transport` over the default torch.distributed group, tensors on ``device``.

    Over gloo a message is one frame (header and payload in one buffer), received into a
    buffer of the size both sides agree on: the largest frame sent so far between the two, at
    least :data:`MIN_CAPACITY` (a larger one is announced by a header-only :data:`GROW` frame
    first, which gloo receives into the old, larger-or-equal buffer). :meth:`expect` posts the
    receive of a message that is sure to come, so that it is read while this rank computes: a
    blocking receive costs a thread wake-up (about a millisecond on the 2-core VMs here). NCCL
    needs the sizes to match, so there the header and the payload go as two messages."""

    def __init__(self, device: torch.device, group: str = "the run") -> None:
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device, self.group = device, group
        self.framed = dist.get_backend() == "gloo"
        self._capacity = dict.fromkeys(range(self.size), MIN_CAPACITY)  # bytes, by peer
        self._pending: list[tuple] = []
        self._posted = {r: collections.deque() for r in range(self.size)}  # expect()ed frames

    def send(self, message, dst: int) -> None:
        encoded = encode(message, self.device)
        with _answering(dst, self.group):
            if self.framed:
                buffers = [encoded.frame]
                if encoded.frame.numel() > self._capacity[dst]:
                    self._capacity[dst] = encoded.frame.numel()
                    buffers.insert(0, grow_frame(encoded.frame.numel(), self.device))
            else:
                buffers = [
                    encoded.header,
                    *([encoded.payload] if encoded.payload is not None else []),
                ]
            works = [dist.isend(b, dst) for b in buffers]
            self._pending.append((works, buffers))
            while len(self._pending) > WINDOW:
                for work in self._pending.pop(0)[0]:
                    work.wait()

    def recv(self, src: int) -> Any:
        with _answering(src, self.group):
            header, payload = self._recv_frame(src) if self.framed else self._recv_parts(src)
        return decode(header, payload)

    def expect(self, src: int) -> None:
        if self.framed:
            frame = torch.empty(self._capacity[src], dtype=torch.uint8, device=self.device)
            with _answering(src, self.group):
                self._posted[src].append((frame, dist.irecv(frame, src)))

    def _recv_frame(self, src: int) -> tuple[Tensor, Tensor | None]:
        while True:
            if self._posted[src]:
                frame, work = self._posted[src].popleft()
                work.wait()
            else:
                frame = torch.empty(self._capacity[src], dtype=torch.uint8, device=self.device)
                dist.recv(frame, src)
            header = frame[:FRAME].view(torch.int64)
            if int(header[0]) != GROW:
                size = payload_size(header)
                return header, frame[FRAME : FRAME + size] if size else None
            self._capacity[src] = int(header[1])

    def _recv_parts(self, src: int) -> tuple[Tensor, Tensor | None]:
        header = torch.empty(HEADER, dtype=torch.int64, device=self.device)
        dist.recv(header, src)
        payload = None
        if payload_size(header):
            payload = torch.empty(payload_size(header), dtype=torch.uint8, device=self.device)
            dist.recv(payload, src)
        return header, payload

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
            for works, _ in self._pending:
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
    message goes through :func:`~ctsp.parallel.messages.encode` and ``decode`` as over gloo
    (its frame copied: the receiver's tensors are its own)."""

    def __init__(self, world: LocalWorld, rank: int, group: str = "the run") -> None:
        self.world, self.rank, self.size, self.group = world, rank, world.size, group

    def send(self, message, dst: int) -> None:
        frame = encode(message).frame.clone()
        self.world.queues[(self.rank, dst)].put(frame)

    def recv(self, src: int) -> Any:
        try:
            frame = self.world.queues[(src, self.rank)].get(timeout=LOCAL_TIMEOUT)
        except queue.Empty:
            raise _lost(src, self.group) from None
        payload = frame[FRAME:] if frame.numel() > FRAME else None
        return decode(frame[:FRAME].view(torch.int64), payload)

    def expect(self, src: int) -> None:
        """Nothing to post: a message is in its queue once sent."""

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
    of this process with the caller's torch thread count; returns their results by rank and
    raises the first error (by rank)."""
    world = LocalWorld(size)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size
    count = torch.get_num_threads()  # a new thread may start with another count

    def body(rank: int) -> None:
        try:
            torch.set_num_threads(count)
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
