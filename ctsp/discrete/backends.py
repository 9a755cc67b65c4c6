"""Training backends: what runs a learner over an epoch's minibatches.

The seam between the epoch (order, augmentation, schedule: :class:`DiscreteTrainer`) and where
the minibatches are computed. A backend's ``run(learner, batches, context)`` consumes an
iterable of (x, y) minibatches and yields, per minibatch in order, (loss per exit, wrong
predictions per exit, batch size); each minibatch runs inside a fresh ``context()`` (the
trainer's autocast of ``train.precision``: entered and left per minibatch, since autocast
caches its low-precision copies of the weights until it is left, and the weights change at
every step). Sigprop layers never wait for a backward pass, so later backends can pipeline
the layers over processes or replicate them (docs/architecture.md, "where to add a training
backend"); today there is one: a single process. Registry: :data:`BACKENDS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from torch import Tensor

from ..registry import Registry


class SingleProcess:
    """Every minibatch in this process, one after the other (``learner.train_batch``)."""

    name = "single"

    def run(
        self, learner, batches: Iterable[tuple[Tensor, Tensor]], context=contextlib.nullcontext
    ) -> Iterator[tuple[Tensor, Tensor, int]]:
        for x, y in batches:
            with context():
                losses, wrong = learner.train_batch(x, y)
            yield losses, wrong, x.shape[0]


BACKENDS = Registry("training backend", {"single": SingleProcess})
