"""Training backends: what runs a learner over an epoch's minibatches.

The seam between the epoch (order, augmentation, schedule: :class:`DiscreteTrainer`) and where
the minibatches are computed. A backend's ``run(learner, batches)`` consumes an iterable of
(x, y) minibatches and yields, per minibatch in order, (loss per exit, wrong predictions per
exit, batch size). Sigprop layers never wait for a backward pass, so later backends can pipeline
the layers over processes or replicate them (docs/architecture.md, "where to add a training
backend"); today there is one: a single process. Registry: :data:`BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import Tensor

from ..registry import Registry


class SingleProcess:
    """Every minibatch in this process, one after the other (``learner.train_batch``)."""

    name = "single"

    def run(
        self, learner, batches: Iterable[tuple[Tensor, Tensor]]
    ) -> Iterator[tuple[Tensor, Tensor, int]]:
        for x, y in batches:
            losses, wrong = learner.train_batch(x, y)
            yield losses, wrong, x.shape[0]


BACKENDS = Registry("training backend", {"single": SingleProcess})
