"""Learning-rule baselines for the discrete networks (paper Tables I, II and VI; Table V's Shallow).

Every rule trains the same ``models.discrete.DiscreteNetwork`` (its ``SignalLayer`` s, the
last one the classification layer) on the input path only; the network's target generator is
not used. Each class is a :class:`ctsp.discrete.Learner` (``train.rule`` picks it through
``ctsp.discrete.RULES``), uses Adam with ``train.lr`` and raises
:class:`ctsp.errors.DivergenceError`, naming the layer, on a NaN or Inf loss.

- ``bp``, :class:`Backprop`: cross entropy of the output, back-propagated through every layer;
  one optimizer.
- ``fa``, :class:`FeedbackAlignment`: as BP, but the error crosses every projection backwards
  through a fixed random matrix B_i instead of W_i^T (Lillicrap et al. 2016); one autograd
  function, :class:`FeedbackAlignmentFunction`, for Linear and Conv2d projections.
- ``dfa``, :class:`DirectFeedbackAlignment`: the output error e = dL/dz = (softmax(z) - y*) / B
  goes straight to every hidden layer's output through a fixed random matrix,
  dL/dh_i := e B_i (Noekland 2016); each hidden layer back-propagates that within itself only
  (its input is detached). No end-to-end backward pass is run.
- ``ll-bp`` / ``ll-fa``, :class:`LocalLearning`: Noekland & Eidnes (2019) "predsim" loss per
  block, 0.99 MSE(S(conv3x3(h_i)), S(y*)) + 0.01 CE(W_d pool(h_i), y) (S: cosine-similarity
  matrix of the batch; conv blocks: per-channel std over positions), each block's input
  detached, each block with its own optimizer; ``ll-fa`` sends the classifier's error back to
  h_i through a fixed random matrix (:class:`FeedbackAlignmentFunction`).
- ``shallow``, :class:`Shallow`: only the classification layer trains, the hidden layers keep
  their initial weights (their batch-norm running statistics still follow the data).

The fixed random matrices are drawn from a generator seeded by ``config.seed`` (so a rebuilt
learner draws the same ones) and are part of the learner's state (the checkpoint), like the
auxiliary heads of LL. docs/baselines.md has the equations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import DivergenceError
from .feedback import feedback_alignment, fixed_generator
from .learner import Rules
from .lpred import ClassifierCE


def _hidden_parameters(net) -> list:
    """Every layer's parameters (not the unused target generator's)."""
    return [p for layer in net.layers for p in layer.parameters()]


class _OneExit(Rules):
    """A baseline with one exit, the network's output."""

    def __init__(self, net, config) -> None:
        super().__init__()
        self.net, self.lr = net, config.train.lr

    def predict_exits(self, x: Tensor) -> Tensor:
        return self.net(x).argmax(1)[:, None]


class Backprop(_OneExit):
    """End-to-end backpropagation: CE(z, y) of the output, one Adam over every layer."""

    def __init__(self, net, config) -> None:
        super().__init__(net, config)
        self.rules["out"] = ClassifierCE(_hidden_parameters(net), lr=self.lr)

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss, z = self.rules["out"].update(self.net(x), None, y)
        return loss[None], (z.argmax(1) != y).sum()[None]


class FeedbackAlignment(Backprop):
    """Backprop with fixed random feedback: every projection's backward pass uses B_i (drawn
    once, never updated) instead of W_i^T (:func:`feedback_alignment`)."""

    def __init__(self, net, config) -> None:
        super().__init__(net, config)
        gen = fixed_generator(config)
        for name, layer in zip(net.names, net.layers, strict=True):
            self.fixed[name] = feedback_alignment(layer.projection, gen)


class DirectFeedbackAlignment(_OneExit):
    """Direct feedback alignment: dL/dh_i := e B_i for every hidden layer i, with
    e = dL/dz = (softmax(z) - onehot(y)) / B the output error of the mean cross entropy and
    B_i a fixed random matrix (m, |h_i|), U(-1/sqrt(m), 1/sqrt(m)). The classification layer
    learns from its own CE. Every layer's input is detached, so each hidden layer computes only
    its own gradient from e; one backward call over the per-layer graphs, one Adam step."""

    def __init__(self, net, config) -> None:
        super().__init__(net, config)
        self.rules["out"] = ClassifierCE(_hidden_parameters(net), lr=self.lr)
        gen, m = fixed_generator(config), net.classes
        device = net.layers[0].projection.weight.device
        for name, shape in zip(net.names[:-1], net.shapes[:-1], strict=True):
            b = (torch.rand(m, math.prod(shape), generator=gen) * 2 - 1) / math.sqrt(m)
            self.fixed[name] = b.to(device)

    def hidden_gradients(self, z: Tensor, y: Tensor, hidden: list[Tensor]) -> list[Tensor]:
        """dL/dh_i = e B_i, shaped like each hidden output h_i, from the output logits z."""
        e = (torch.softmax(z.detach(), 1) - F.one_hot(y, z.shape[1]).to(z.dtype)) / z.shape[0]
        return [
            (e @ b).view_as(h).to(h.dtype) for b, h in zip(self.fixed.values(), hidden, strict=True)
        ]

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        hidden, h = [], x
        for layer in self.net.layers[:-1]:
            h, _ = layer(h.detach())
            hidden.append(h)
        z, _ = self.net.layers[-1](h.detach())
        loss = F.cross_entropy(z, y)
        if not bool(torch.isfinite(loss)):
            raise DivergenceError("training diverged: NaN or Inf in the loss of layer out")
        grads = self.hidden_gradients(z, y, hidden)
        optimizer = self.rules["out"].optimizer
        with torch.autocast(loss.device.type, enabled=False):
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward([*hidden, loss], [*grads, None])
            optimizer.step()
        return loss.detach()[None], (z.argmax(1) != y).sum()[None]


class Shallow(_OneExit):
    """Only the classification layer learns (CE, Adam); the hidden layers run without gradient
    and keep their initial weights."""

    def __init__(self, net, config) -> None:
        super().__init__(net, config)
        self.rules["out"] = ClassifierCE(net.layers[-1].parameters(), lr=self.lr)

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            h = x
            for layer in self.net.layers[:-1]:
                h, _ = layer(h)
        z, _ = self.net.layers[-1](h)
        loss, z = self.rules["out"].update(z, None, y)
        return loss[None], (z.argmax(1) != y).sum()[None]
