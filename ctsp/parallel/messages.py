"""The messages between the processes of a parallel run: frozen dataclasses, and their encoding.

A message travels as one frame: a fixed-size int64 header (its kind and a description of every
field) followed, when it holds tensors, by a byte payload with the tensors' exact bits one after
the other (8-byte aligned, each in its own memory layout: contiguous or channels-last): one
buffer however many tensors it holds, and no pickling on the hot path (:func:`encode`,
:func:`decode`). A field that holds a whole state (nested dicts of tensors, sent once an epoch)
is pickled with its tensors left out: their bits join the payload like any other tensor's, the
small pickle after them.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from typing import Any

import torch
from torch import Tensor

# int64 words in a header: room for a message of a few tensors of up to 5 dimensions
HEADER = 64
FRAME = HEADER * 8  # its bytes
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
    """A stage to rank 0 at the end of an epoch: its layers' network and learner state."""

    net: dict
    learner: dict


KINDS = (Epoch, Batch, Infer, Output, Report, End, Stop, State)


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A message ready to travel: ``frame`` (uint8: the header's :data:`FRAME` bytes, then the
    payload), ``header`` (int64, :data:`HEADER` words) and ``payload`` (uint8: the tensors'
    bits, then the pickled objects; None without either) as views of it."""

    frame: Tensor

    @property
    def header(self) -> Tensor:
        return self.frame[:FRAME].view(torch.int64)

    @property
    def payload(self) -> Tensor | None:
        return self.frame[FRAME:] if self.frame.numel() > FRAME else None


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


class _Pickler(pickle.Pickler):
    """Pickles the objects of a message with their tensors left out (appended to ``tensors``,
    their bits go into the payload): a state of many megabytes pickles in microseconds."""

    def __init__(self, file, tensors: list[Tensor]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors = tensors

    def persistent_id(self, obj):
        if not isinstance(obj, Tensor):
            return None
        layout, flat = _layout(obj.detach())
        self.tensors.append(flat)
        return (_DTYPES.index(obj.dtype), layout, tuple(obj.shape))


class _Writer:
    def __init__(self) -> None:
        self.words: list[int] = []
        self.tensors: list[Tensor] = []
        self.objects: list[Any] = []

    def describe(self, t: Tensor) -> tuple[int, ...]:
        """(dtype, layout, dimensions, *shape) of ``t``, whose bits join the payload."""
        layout, flat = _layout(t.detach())
        self.tensors.append(flat)
        return (_DTYPES.index(t.dtype), layout, t.dim(), *t.shape)

    def blob(self) -> Tensor | None:
        """The pickled objects (their tensors joining the payload before it), or None."""
        if not self.objects:
            return None
        file = io.BytesIO()
        _Pickler(file, self.tensors).dump(self.objects)
        return torch.frombuffer(bytearray(file.getvalue()), dtype=torch.uint8)

    def value(self, v) -> None:
        if isinstance(v, Tensor):
            self.words += [_TENSOR, *self.describe(v)]
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
        else:  # a whole state: pickled, its tensors in the payload
            self.words.append(_OBJECT)
            self.objects.append(v)


def encode(message, device: torch.device | None = None) -> Encoded:
    """The frame of ``message`` (one of :data:`KINDS`) on ``device`` (default: the first
    tensor's, else the CPU). Header words: kind, payload bytes, bytes of the pickled objects
    (0: none), then a token per field."""
    writer = _Writer()
    writer.words.append(KINDS.index(type(message)))
    for field in dataclasses.fields(message):
        writer.value(getattr(message, field.name))
    blob = writer.blob()
    if blob is not None:
        writer.tensors.append(blob)
    total = sum(_bytes(t) for t in writer.tensors)
    writer.words[1:1] = [total, 0 if blob is None else blob.numel()]
    if len(writer.words) > HEADER:
        raise ValueError(f"a {type(message).__name__} message needs more than {HEADER} words")
    if device is None:
        device = writer.tensors[0].device if writer.tensors else torch.device("cpu")
    words = writer.words + [0] * (HEADER - len(writer.words))
    parts = [torch.tensor(words, dtype=torch.int64).view(torch.uint8).to(device)]
    for t in writer.tensors:
        parts.append(t.reshape(-1).view(torch.uint8))
        pad = _bytes(t) - t.numel() * t.element_size()
        if pad:
            parts.append(torch.zeros(pad, dtype=torch.uint8, device=t.device))
    frame = torch.cat(parts) if len(parts) > 1 else parts[0]
    return Encoded(frame)


# the kind of a header-only frame that announces a larger frame (its bytes in word 1)
GROW = -1


def grow_frame(size: int, device: torch.device) -> Tensor:
    """The frame that tells a receiver to take the next frame into ``size`` bytes."""
    words = torch.zeros(HEADER, dtype=torch.int64)
    words[0], words[1] = GROW, size
    return words.view(torch.uint8).to(device)


def payload_size(header: Tensor) -> int:
    """The bytes of the payload that follows ``header`` (0: none)."""
    return int(header[1])


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, reader: _Reader) -> None:
        super().__init__(file)
        self.reader = reader

    def persistent_load(self, pid) -> Tensor:
        dtype, layout, shape = pid
        return self.reader.bits(dtype, layout, list(shape))


class _Objects:
    """Where a field held an object: the pickled objects are read after the fields."""


class _Reader:
    def __init__(self, words: list[int], payload: Tensor | None) -> None:
        self.words, self.at, self.offset = words, 3, 0
        self.payload = payload

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
        return _Objects

    def tensor(self) -> Tensor:
        dtype, layout, dim = self.take(), self.take(), self.take()
        return self.bits(dtype, layout, [self.take() for _ in range(dim)])

    def objects(self) -> list:
        """The pickled objects, after every field has been read."""
        blob_bytes = self.words[2]
        start = self.payload.numel() - -(-blob_bytes // 8) * 8
        blob = self.payload[start : start + blob_bytes]
        objects = _Unpickler(io.BytesIO(blob.cpu().numpy().tobytes()), self)
        return objects.load()

    def bits(self, dtype: int, layout: int, shape: list[int]) -> Tensor:
        """The next tensor of the payload (``dtype`` a code of :data:`_DTYPES`)."""
        dtype = _DTYPES[dtype]
        n = dtype.itemsize * torch.Size(shape).numel()
        raw = self.payload[self.offset : self.offset + n]
        self.offset += -(-n // 8) * 8
        if layout == _CHANNELS_LAST:
            b, c, h, w = shape
            return raw.view(dtype).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return raw.view(dtype).reshape(shape)


def decode(header: Tensor, payload: Tensor | None) -> Any:
    """The message that :func:`encode` turned into ``header`` and ``payload``; its tensors are
    views of ``payload``."""
    words = header.tolist()
    kind = KINDS[words[0]]
    reader = _Reader(words, payload)
    values = [reader.value() for _ in dataclasses.fields(kind)]
    if words[2]:
        objects = iter(reader.objects())
        values = [next(objects) if v is _Objects else v for v in values]
    return kind(*values)
