"""The messages between the processes of a parallel run: frozen dataclasses, and their encoding.

A message travels as a fixed-size int64 header (its kind and a description of every field) and,
when it holds tensors, one byte payload with the tensors' exact bits one after the other (8-byte
aligned, each in its own memory layout: contiguous or channels-last): two tensor messages
however many tensors it holds, and no pickling on the hot path (:func:`encode`, :func:`decode`).
A field that holds a whole state (a dict of tensors, sent once an epoch) travels as one pickled
object after the header.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

# int64 words in a header: room for a message of a few tensors of up to 5 dimensions
HEADER = 64
_DTYPES = (
    torch.float32,
    torch.float64,
    torch.bfloat16,
    torch.float16,
    torch.int64,
    torch.int32,
    torch.uint8,
    torch.bool,
)
# the tokens of a header: a tensor, None, an int, a float (its float64 bits), a tuple, an object
_TENSOR, _NONE, _INT, _FLOAT, _TUPLE, _OBJECT = range(6)
_CONTIGUOUS, _CHANNELS_LAST = 0, 1


@dataclasses.dataclass(frozen=True)
class Epoch:
    """Rank 0 to a stage or replica: train ``epoch`` at learning rate ``lr``, from ``state``
    (the whole network's and learner's, ``{"net": …, "learner": …}``) where given."""

    epoch: int
    lr: float
    state: dict | None = None


@dataclasses.dataclass(frozen=True)
class Batch:
    """Stage r to stage r + 1: a minibatch's carry (the last (h, t) of stage r; t may be None)
    and its labels."""

    carry: tuple
    labels: Tensor


@dataclasses.dataclass(frozen=True)
class Infer:
    """Along the stages: the target-loop context pass, ``h`` the last stage's input so far."""

    h: Tensor


@dataclasses.dataclass(frozen=True)
class Output:
    """The last stage to rank 0: the network's output of an :class:`Infer` pass."""

    out: Tensor


@dataclasses.dataclass(frozen=True)
class Report:
    """A stage to rank 0: one minibatch's loss and wrong predictions per layer of the stage."""

    losses: Tensor
    wrong: Tensor


@dataclasses.dataclass(frozen=True)
class End:
    """Stage r to stage r + 1: the epoch's minibatches are over."""


@dataclasses.dataclass(frozen=True)
class Stop:
    """Rank 0 to every other rank: training is over."""


@dataclasses.dataclass(frozen=True)
class State:
    """A stage to rank 0 at the end of an epoch: its network and learner state."""

    net: dict
    learner: dict


KINDS = (Epoch, Batch, Infer, Output, Report, End, Stop, State)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A message ready to travel: ``header`` (int64, :data:`HEADER` words), ``payload`` (uint8,
    the tensors' bits; None without tensors), ``objects`` (the pickled fields, in order)."""

    header: Tensor
    payload: Tensor | None
    objects: tuple


def _layout(t: Tensor) -> tuple[int, Tensor]:
    """(layout code, the tensor's elements in memory order as a contiguous tensor)."""
    if (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        return _CHANNELS_LAST, t.permute(0, 2, 3, 1)
    return _CONTIGUOUS, t.contiguous()


def _bytes(t: Tensor) -> int:
    return -(-t.numel() * t.element_size() // 8) * 8  # 8-byte aligned


class _Writer:
    def __init__(self) -> None:
        self.words: list[int] = []
        self.tensors: list[Tensor] = []
        self.objects: list[Any] = []

    def value(self, v) -> None:
        if isinstance(v, Tensor):
            layout, flat = _layout(v.detach())
            self.words += [_TENSOR, _DTYPES.index(v.dtype), layout, v.dim(), *v.shape]
            self.tensors.append(flat)
        elif v is None:
            self.words.append(_NONE)
        elif isinstance(v, bool | int):
            self.words += [_INT, int(v)]
        elif isinstance(v, float):
            self.words += [_FLOAT, int(torch.tensor(v, dtype=torch.float64).view(torch.int64))]
        elif isinstance(v, tuple):
            self.words += [_TUPLE, len(v)]
            for item in v:
                self.value(item)
        else:
            self.words.append(_OBJECT)
            self.objects.append(v)


def encode(message, device: torch.device | None = None) -> Encoded:
    """The header, payload and objects of ``message`` (one of :data:`KINDS`), the header and
    payload on ``device`` (default: the first tensor's, else the CPU)."""
    writer = _Writer()
    writer.words.append(KINDS.index(type(message)))
    for field in dataclasses.fields(message):
        writer.value(getattr(message, field.name))
    total = sum(_bytes(t) for t in writer.tensors)
    writer.words[1:1] = [total, len(writer.objects)]
    if len(writer.words) > HEADER:
        raise ValueError(f"a {type(message).__name__} message needs more than {HEADER} words")
    if device is None:
        device = writer.tensors[0].device if writer.tensors else torch.device("cpu")
    words = writer.words + [0] * (HEADER - len(writer.words))
    header = torch.tensor(words, dtype=torch.int64).to(device)
    payload = None
    if writer.tensors:
        payload = torch.empty(total, dtype=torch.uint8, device=device)
        offset = 0
        for t in writer.tensors:
            n = t.numel() * t.element_size()
            payload[offset : offset + n].copy_(t.reshape(-1).view(torch.uint8))
            offset += _bytes(t)
    return Encoded(header, payload, tuple(writer.objects))


def payload_size(header: Tensor) -> int:
    """The bytes of the payload that follows ``header`` (0: none)."""
    return int(header[1])


class _Reader:
    def __init__(self, words: list[int], payload: Tensor | None, objects) -> None:
        self.words, self.at, self.offset = words, 3, 0
        self.payload, self.objects = payload, iter(objects)

    def take(self) -> int:
        self.at += 1
        return self.words[self.at - 1]

    def value(self):
        token = self.take()
        if token == _TENSOR:
            return self.tensor()
        if token == _NONE:
            return None
        if token == _INT:
            return self.take()
        if token == _FLOAT:
            return float(torch.tensor(self.take(), dtype=torch.int64).view(torch.float64))
        if token == _TUPLE:
            return tuple(self.value() for _ in range(self.take()))
        return next(self.objects)

    def tensor(self) -> Tensor:
        dtype, layout, dim = _DTYPES[self.take()], self.take(), self.take()
        shape = [self.take() for _ in range(dim)]
        n = dtype.itemsize * torch.Size(shape).numel()
        raw = self.payload[self.offset : self.offset + n]
        self.offset += -(-n // 8) * 8
        if layout == _CHANNELS_LAST:
            b, c, h, w = shape
            return raw.view(dtype).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return raw.view(dtype).reshape(shape)


def decode(header: Tensor, payload: Tensor | None, objects=()) -> Any:
    """The message that :func:`encode` turned into ``header``, ``payload`` and ``objects``."""
    words = header.tolist()
    kind = KINDS[words[0]]
    reader = _Reader(words, payload, objects)
    return kind(*(reader.value() for _ in dataclasses.fields(kind)))


def objects_in(header: Tensor) -> int:
    """How many pickled objects follow ``header``."""
    return int(header[2])
