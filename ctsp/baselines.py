"""Learning-rule baselines for the discrete networks (paper Tables I, II and VI; Table V's Shallow).

Every rule trains the same :class:`models.discrete.DiscreteNetwork` (its ``SignalLayer`` s, the
last one the classification layer) on the input path only; the network's target generator is
not used. Each class is a :class:`ctsp.discrete.Learner` (``train.rule`` picks it through
``ctsp.discrete.LEARNERS``), uses Adam with ``train.lr`` and raises
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
import types

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .config import DiscreteRunConfig
from .errors import DivergenceError
from .layers import ClassifierCE, Conv2d, Linear, LPred

FIXED_SEED_OFFSET = 7919  # the fixed random matrices come from torch.Generator(seed + this)
PREDSIM_BETA = 0.99  # weight of the similarity-matching term of the predsim loss
DECODER_FEATURES = 2048  # LL: the auxiliary classifier sees at most this many (pooled) features


# --- feedback alignment: one autograd function for Linear and Conv2d ---------------------------


class FeedbackAlignmentFunction(torch.autograd.Function):
    """A projection whose backward pass sends the error through a fixed matrix B.

    Forward: y = x W^T + b (``padding`` None, a dense layer) or y = conv2d(x, W, padding) + b.
    Backward: dL/dW and dL/db as usual; dL/dx uses B (shaped like W) in place of W, i.e.
    g B for a dense layer and the transposed convolution of g with B for a conv layer. Only
    the gradients that autograd asks for are computed (no dL/dx for the network's input).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, feedback, padding):
        ctx.save_for_backward(x, feedback)
        ctx.padding, ctx.has_bias = padding, bias is not None
        if padding is None:
            return F.linear(x, weight, bias)
        return F.conv2d(x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, feedback = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if ctx.padding is None:
            g2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
            gx = grad @ feedback if need_x else None
            gw = g2.T @ x2 if need_w else None
            gb = g2.sum(0) if need_b else None
        else:
            p = ctx.padding
            bias_sizes = [feedback.shape[0]] if ctx.has_bias else None
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad, x, feedback, bias_sizes, [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                [need_x, need_w, need_b and ctx.has_bias],
            )  # fmt: skip
        return gx, gw, gb, None, None


def _fa_forward(self, rates: Tensor) -> Tensor:
    padding = self.padding if isinstance(self, Conv2d) else None
    return FeedbackAlignmentFunction.apply(rates, self.weight, self.bias, self.feedback, padding)


def feedback_alignment(projection: Linear | Conv2d, gen: torch.Generator) -> Tensor:
    """Give ``projection`` a fixed random feedback matrix B and route its backward pass
    through it (:class:`FeedbackAlignmentFunction`); its forward output is unchanged.

    B is shaped like the weights and drawn like them, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from
    ``gen`` on the CPU; it is a non-persistent buffer ``feedback`` of the projection (it
    follows ``.to(device)``; the learners keep it in their own state). Returns B.
    """
    w = projection.weight
    bound = 1.0 / math.sqrt(w[0].numel())
    b = (torch.rand(w.shape, generator=gen) * 2 - 1) * bound
    projection.register_buffer("feedback", b.to(w.device, w.dtype), persistent=False)
    projection.forward = types.MethodType(_fa_forward, projection)
    return projection.feedback


def fixed_generator(config: DiscreteRunConfig) -> torch.Generator:
    """The generator of a learner's fixed random matrices (seeded by ``config.seed``)."""
    return torch.Generator().manual_seed(config.seed + FIXED_SEED_OFFSET)


# --- shared learner machinery ------------------------------------------------------------------


def _update(rule: LPred, name: str, h: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``rule.update`` with the layer's name in a divergence message."""
    try:
        return rule.update(h, None, y)
    except DivergenceError:
        raise DivergenceError(
            f"training diverged: NaN or Inf in the loss of layer {name}"
        ) from None


def _check(loss: Tensor, name: str) -> None:
    if not bool(torch.isfinite(loss)):
        raise DivergenceError(f"training diverged: NaN or Inf in the loss of layer {name}")


class _Learner:
    """What every baseline shares: ``rules`` (each owns an Adam optimizer) and ``fixed``, the
    fixed random matrices; the state is one dict per rule, then ``{"fixed": [...]}``."""

    names: tuple[str, ...] = ("out",)

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        self.net, self.lr = net, config.train.lr
        self.rules: list[LPred] = []
        self.fixed: list[Tensor] = []

    def predict_exits(self, x: Tensor) -> Tensor:
        return self.net(x).argmax(1)[:, None]

    def set_lr(self, lr: float) -> None:
        for rule in self.rules:
            rule.set_lr(lr)

    def state_dict(self) -> list[dict]:
        return [rule.state_dict() for rule in self.rules] + [{"fixed": list(self.fixed)}]

    def load_state_dict(self, states: list[dict]) -> None:
        *rules, fixed = states
        for rule, state in zip(self.rules, rules, strict=True):
            rule.load_state_dict(state)
        with torch.no_grad():
            for mine, saved in zip(self.fixed, fixed["fixed"], strict=True):
                mine.copy_(saved)


def _hidden_parameters(net) -> list[nn.Parameter]:
    """Every layer's parameters (not the unused target generator's)."""
    return [p for layer in net.layers for p in layer.parameters()]


# --- the rules ---------------------------------------------------------------------------------


class Backprop(_Learner):
    """End-to-end backpropagation: CE(z, y) of the output, one Adam over every layer."""

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        super().__init__(net, config)
        self.rules = [ClassifierCE(_hidden_parameters(net), lr=self.lr)]

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        loss, z = _update(self.rules[0], "out", self.net(x), y)
        return loss[None], (z.argmax(1) != y).sum()[None]


class FeedbackAlignment(Backprop):
    """Backprop with fixed random feedback: every projection's backward pass uses B_i (drawn
    once, never updated) instead of W_i^T (:func:`feedback_alignment`)."""

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        super().__init__(net, config)
        gen = fixed_generator(config)
        self.fixed = [feedback_alignment(layer.projection, gen) for layer in net.layers]


class DirectFeedbackAlignment(_Learner):
    """Direct feedback alignment: dL/dh_i := e B_i for every hidden layer i, with
    e = dL/dz = (softmax(z) - onehot(y)) / B the output error of the mean cross entropy and
    B_i a fixed random matrix (m, |h_i|), U(-1/sqrt(m), 1/sqrt(m)). The classification layer
    learns from its own CE. Every layer's input is detached, so each hidden layer computes only
    its own gradient from e; one backward call over the per-layer graphs, one Adam step."""

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        super().__init__(net, config)
        self.rules = [ClassifierCE(_hidden_parameters(net), lr=self.lr)]
        gen, m = fixed_generator(config), net.classes
        device = net.layers[0].projection.weight.device
        self.fixed = [
            ((torch.rand(m, math.prod(shape), generator=gen) * 2 - 1) / math.sqrt(m)).to(device)
            for shape in net.shapes[:-1]
        ]

    def hidden_gradients(self, z: Tensor, y: Tensor, hidden: list[Tensor]) -> list[Tensor]:
        """dL/dh_i = e B_i, shaped like each hidden output h_i, from the output logits z."""
        e = (torch.softmax(z.detach(), 1) - F.one_hot(y, z.shape[1]).to(z.dtype)) / z.shape[0]
        return [(e @ b).view_as(h) for b, h in zip(self.fixed, hidden, strict=True)]

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        hidden, h = [], x
        for layer in self.net.layers[:-1]:
            h, _ = layer(h.detach())
            hidden.append(h)
        z, _ = self.net.layers[-1](h.detach())
        loss = F.cross_entropy(z, y)
        _check(loss, "out")
        grads = self.hidden_gradients(z, y, hidden)
        optimizer = self.rules[0].optimizer
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward([*hidden, loss], [*grads, None])
        optimizer.step()
        return loss.detach()[None], (z.argmax(1) != y).sum()[None]


def similarity(x: Tensor) -> Tensor:
    """The cosine-similarity matrix (B, B) of a batch, each row centred first (Noekland &
    Eidnes 2019). Maps (B, C, H, W) with C > 3 and H > 1 are first reduced to the standard
    deviation of every channel over the positions; other maps are flattened."""
    if x.dim() == 4:
        x = x.flatten(2).std(2) if x.shape[1] > 3 and x.shape[2] > 1 else x.flatten(1)
    x = x.flatten(1)
    xc = x - x.mean(1, keepdim=True)
    xn = xc / (1e-8 + xc.square().sum(1, keepdim=True).sqrt())
    return (xn @ xn.T).clamp(-1, 1)


def decoder_grid(shape: tuple[int, ...], limit: int = DECODER_FEATURES) -> tuple[int, int] | None:
    """The average-pooled map size (h, w) that brings a (C, H, W) block output to at most
    ``limit`` features, halving the height and the width in turn (Noekland & Eidnes' rule for
    their ``dim_in_decoder``); None when no pooling is needed (or for dense outputs)."""
    if len(shape) != 3:
        return None
    c, h, w = shape
    kh = kw = 1
    oh, ow = h, w
    while c * oh * ow > limit and kh < h:
        kh *= 2
        oh = math.ceil(h / kh)
        if c * oh * ow > limit:
            kw *= 2
            ow = math.ceil(w / kw)
    return None if (oh, ow) == (h, w) else (oh, ow)


class PredSimHead(nn.Module):
    """The auxiliary parts of one LL block: a 3x3 conv (conv blocks) before the similarity
    matrix, and a linear classifier (zero-initialised weights, as Noekland & Eidnes) on the
    average-pooled output; with ``feedback`` its backward pass uses fixed random weights."""

    def __init__(
        self, shape: tuple[int, ...], classes: int, feedback: torch.Generator | None = None
    ) -> None:
        super().__init__()
        conv = len(shape) == 3
        self.sim_conv = (
            Conv2d(shape[0], shape[0], 3, padding=1, grad=True, init="fan_in") if conv else None
        )
        self.grid = decoder_grid(shape)
        features = shape[0] * math.prod(self.grid) if self.grid else math.prod(shape)
        self.decoder = Linear(features, classes, bias=True, grad=True, init="fan_in")
        with torch.no_grad():
            self.decoder.weight.zero_()
        self.fixed = [feedback_alignment(self.decoder, feedback)] if feedback is not None else []

    def classify(self, h: Tensor) -> Tensor:
        """The auxiliary classifier's logits (B, m)."""
        if self.grid is not None:
            h = F.adaptive_avg_pool2d(h, self.grid)
        return self.decoder(h.flatten(1))

    def similarity(self, h: Tensor) -> Tensor:
        """The block output's similarity matrix (B, B)."""
        return similarity(self.sim_conv(h) if self.sim_conv is not None else h)


class PredSim(LPred):
    """One LL block's rule: 0.99 MSE(S(h), S(y*)) + 0.01 CE(classifier(h), y) over the
    block's parameters and its head's, with their own Adam. The logits are the classifier's
    (the block's early exit)."""

    def __init__(self, params, head: PredSimHead, *, lr: float, beta: float = PREDSIM_BETA):
        super().__init__([*params, *head.parameters()], lr=lr)
        self.head, self.beta = head, beta

    def logits(self, h: Tensor, t: Tensor | None) -> Tensor:
        return self.head.classify(h)

    def loss(self, h: Tensor, t: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.head.classify(h)
        onehot = F.one_hot(y, logits.shape[1]).to(h.dtype)
        sim = F.mse_loss(self.head.similarity(h), similarity(onehot))
        pred = F.cross_entropy(logits, y)
        return self.beta * sim + (1 - self.beta) * pred, logits

    def state_dict(self) -> dict:
        return {"optimizer": super().state_dict(), "head": self.head.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state["optimizer"])
        self.head.load_state_dict(state["head"])


class LocalLearning(_Learner):
    """Local learning (Noekland & Eidnes 2019, predsim): every hidden layer is a block trained
    by :class:`PredSim` as soon as its output is formed, with its input detached; the
    classification layer by its own CE. ``train.rule = "ll-fa"``: the auxiliary classifiers
    send their error back through fixed random weights. Exits: every block's auxiliary
    classifier, then the network's output."""

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        super().__init__(net, config)
        self.names = tuple(net.names)
        gen = fixed_generator(config) if config.train.rule == "ll-fa" else None
        device = net.layers[0].projection.weight.device
        self.heads = nn.ModuleList(
            PredSimHead(shape, net.classes, gen) for shape in net.shapes[:-1]
        ).to(device)
        self.rules = [
            PredSim(layer.parameters(), head, lr=self.lr)
            for layer, head in zip(net.layers, self.heads, strict=False)
        ] + [ClassifierCE(net.layers[-1].parameters(), lr=self.lr)]
        self.fixed = [b for head in self.heads for b in head.fixed]

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        losses, wrong, h = [], [], x
        for name, layer, rule in zip(self.names, self.net.layers, self.rules, strict=True):
            h, _ = layer(h.detach())
            loss, logits = _update(rule, name, h, y)
            losses.append(loss)
            wrong.append((logits.argmax(1) != y).sum())
        return torch.stack(losses), torch.stack(wrong)

    def predict_exits(self, x: Tensor) -> Tensor:
        preds, h = [], x
        for layer, rule in zip(self.net.layers, self.rules, strict=True):
            h, _ = layer(h)
            preds.append(rule.logits(h, None).argmax(1))
        return torch.stack(preds, 1)


class Shallow(_Learner):
    """Only the classification layer learns (CE, Adam); the hidden layers run without gradient
    and keep their initial weights."""

    def __init__(self, net, config: DiscreteRunConfig) -> None:
        super().__init__(net, config)
        self.rules = [ClassifierCE(net.layers[-1].parameters(), lr=self.lr)]

    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            h = x
            for layer in self.net.layers[:-1]:
                h, _ = layer(h)
        z, _ = self.net.layers[-1](h)
        loss, z = _update(self.rules[0], "out", z, y)
        return loss[None], (z.argmax(1) != y).sum()[None]
