"""Discrete sigprop networks (paper Sec. III-IV; Tables I, III, VI), built from ctsp's layers.

A network is a stack of :class:`ctsp.nn.SignalLayer` (projection + static neuron + optional
max-pool) and a target generator (``ctsp.nn.targets``). Training feeds the input x and the
targets through the same layers (Eq. 1-3); :meth:`DiscreteNetwork.pairs` yields each layer's
(h_i, t_i) as it is formed, every layer's inputs detached, so that a layer's loss L(h_i, t_i)
reaches only that layer's parameters (and, for layer 1, the generator's).

The last layer is either a classification layer (``prediction = "classifier"``, Fig. 2b: a
Linear layer to the m classes trained by cross entropy; the targets stop before it) or an output
layer whose prediction compares h_L with the class targets t_L (``"target"``, Fig. 2a). Every
layer gives an early-exit prediction (Eq. 8).

Architectures (``arch``), for 1x28x28, 3x32x32 or 1x8x8 (digits) inputs:

- ``fc``: Linear -> BN -> leaky ReLU -> dropout per hidden layer (Table VI: 2x800, 3x800,
  4x800, 3x1000 with dropout), then the output layer;
- ``conv``: the small CONV network of Table VI. The paper does not spell it out; this follows
  the DFA paper's CIFAR network it is compared with: conv 5x5 ("same") with 32 and 64 channels,
  each followed by a 3x3 max-pool of stride 2, one dense layer of 1000, the output layer;
- ``vgg8b``: conv 3x3 [128, 256, M, 256, 512, M, 512, M, 512, M] (M = 2x2 max-pool) x width,
  each conv -> BN -> leaky ReLU -> dropout, then a dense head (1024) and the output layer.
  7.3 M parameters for 28x28 inputs, 8.9 M for 32x32 (without the target generator).

Weights: PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)); layers followed by batch norm
have no bias.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ctsp.config import ModelConfig, SignalConfig
from ctsp.discrete import PREDICTIONS
from ctsp.nn import (
    TARGETS_INTO,
    Conv2d,
    Linear,
    SignalLayer,
    StaticNeuron,
    TargetGenerator,
    comparison,
    make_generator,
    pooled_size,
)

VGG8B_CHANNELS = (128, 256, "M", 256, 512, "M", 512, "M", 512, "M")


class DiscreteNetwork(nn.Module):
    """Layers, names, a target generator and how predictions are made.

    Args:
        layers: the SignalLayers, input side first; the last maps to the m classes.
        names: one name per layer (``fc1``, ``conv1``, …, ``out``).
        signal: the target generator.
        into: where the first target enters: "hidden" (it is t_1), "input" or "sparse" (it is
            t_0, taken by layer 1).
        prediction: "classifier" (Fig. 2b) or "target" (Fig. 2a).
        compare: the comparison O of the early exits and of L_pred ("dot" or "l2").
        shapes: the shape of one sample of every layer's output h_i, (C, H, W) or (F,) (used
            by learning rules that size per-layer parts: DFA's feedback, LL's heads).
    """

    def __init__(
        self,
        layers: list[SignalLayer],
        names: list[str],
        signal: TargetGenerator,
        *,
        into: str = "hidden",
        prediction: str = "classifier",
        compare: str = "dot",
        shapes: list[tuple[int, ...]] | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(names) or len(layers) < 2:
            raise ValueError("a network needs at least two layers and one name per layer")
        self.layers = nn.ModuleList(layers)
        self.names = tuple(names)
        self.signal = signal
        self.into, self.prediction, self.compare_name = into, prediction, compare
        self.compare = comparison(compare)
        self.classes = signal.classes
        self.shapes = tuple(tuple(s) for s in shapes) if shapes is not None else None

    def layer_parameters(self, i: int) -> list[nn.Parameter]:
        """The parameters layer i's loss trains: its own, and the generator's for layer 1."""
        params = list(self.layers[i].parameters())
        return params + list(self.signal.parameters()) if i == 0 else params

    @torch.no_grad()
    def multiply_adds(self, image_shape: tuple[int, ...], batch: int) -> list[int]:
        """Multiply-adds per layer of one training minibatch of ``batch`` images (C, H, W),
        input and target path: each projection's output elements times the weights behind
        each, counted in a forward pass (eval mode, zero images) of one and of two images and
        extrapolated to ``batch`` (the target path's share does not grow with the batch). The
        cost by which a layer pipeline balances its stages (``ctsp.app.training_backend``)."""
        layer, counts = [0], [[0] * len(self.layers) for _ in range(2)]
        size = [1]

        def count(module, args, out) -> None:
            counts[size[0] - 1][layer[0]] += out.numel() * module.weight[0].numel()

        projections = [m for m in self.modules() if isinstance(m, (Linear, Conv2d))]
        hooks = [m.register_forward_hook(count) for m in projections]
        hooks += [
            m.register_forward_pre_hook(lambda mod, args, i=i: layer.__setitem__(0, i))
            for i, m in enumerate(self.layers)
        ]
        was, device = self.training, next(self.parameters()).device
        self.eval()
        try:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                for size[0] in (1, 2):
                    x = torch.zeros(size[0], *image_shape, device=device)
                    for _ in self.pairs(x):
                        pass
        finally:
            self.train(was)
            for hook in hooks:
                hook.remove()
        one, two = counts
        return [a + (b - a) * (batch - 1) for a, b in zip(one, two, strict=True)]

    def first_targets(self, x: Tensor, h1: Tensor | None, feedback: Tensor | None) -> Tensor:
        """The generator's output for this minibatch (t_0 or t_1, see ``into``)."""
        base = x if self.into != "hidden" else h1
        return self.signal(base=base, feedback=feedback)

    def pairs(
        self,
        x: Tensor | None,
        start: int = 0,
        stop: int | None = None,
        carry: tuple[Tensor, Tensor | None] | None = None,
        feedback: Tensor | None = None,
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Forward pass with the learning signal: yields (h_i, t_i) for every layer i in order.

        x: (B, C, H, W). h_i: (B, ...). t_i: the class targets (m, ...) or the per-sample ones
        (B, m, ...) (see ``ctsp.nn.targets``); None for the classification layer. The inputs of
        every layer are detached, so the graph of (h_i, t_i) holds layer i alone (and the
        generator for i = 1); the generator's output is not detached before layer 1. The next
        layer is computed only when the caller asks for it, after it has used (h_i, t_i).

        Layers ``start`` to ``stop - 1`` only (a stage of a layer pipeline): from ``start > 0``
        on, ``carry`` is what the pass over layers up to ``start - 1`` returned (x is not used)
        and the pairs are those of the whole pass. The generator returns (its
        ``StopIteration.value``) the carry for layer ``stop``: the last (h, t), detached.
        ``feedback``: the target-loop generators' context, :meth:`feedback` of x (computed
        here when None; a pipeline passes the one its stages computed).
        """
        sig = self.signal
        stop = len(self.layers) if stop is None else stop
        if start == 0:
            if sig.needs_feedback and feedback is None:
                feedback = self.feedback(x)
            t = self.first_targets(x, None, feedback) if self.into != "hidden" else None
            h = x
        else:
            h, t = carry
        b, last = h.shape[0], len(self.layers) - 1
        for i in range(start, stop):
            layer = self.layers[i]
            if i == last and PREDICTIONS[self.prediction].classifier:
                z, _ = layer(h.detach())
                yield z, None
                return z.detach(), None
            t_in = None
            if t is not None:
                t_in = t.flatten(0, 1) if sig.per_sample else t
                t_in = t_in if i == 0 else t_in.detach()
            h, t = layer(h.detach(), t_in)
            if i == 0 and TARGETS_INTO[self.into].after_first:
                t = self.first_targets(x, h, feedback)
            elif t is not None and sig.per_sample:
                t = t.unflatten(0, (b, self.classes))
            yield h, t
        return h.detach(), None if t is None else t.detach()

    def forward(self, x: Tensor) -> Tensor:
        """Inference: the final prediction's logits (B, m). With a classification layer only
        the input passes (no target, no generator); with output targets, O(h_L, t_L)."""
        if self.prediction != "classifier":
            return self.exit_logits(x)[-1]
        return self.forward_layers(x)

    def forward_layers(self, h: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """The input path alone through layers ``start`` to ``stop - 1`` (h: the input x, or
        what layer ``start - 1`` put out)."""
        for layer in self.layers[start:stop]:
            h, _ = layer(h)
        return h

    @torch.no_grad()
    def feedback(self, x: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """The classification layer's output z (B, m) of an inference pass (eval mode): the
        context of the target-loop generators (Fig. 2c). Layers ``start`` to ``stop - 1``
        only (x: what layer ``start - 1`` put out): a stage's part of it in a pipeline."""
        was = self.training
        self.eval()
        try:
            return self.forward_layers(x, start, stop)
        finally:
            self.train(was)

    @torch.no_grad()
    def exit_logits(self, x: Tensor) -> list[Tensor]:
        """Early exits (Eq. 8): one (B, m) logit tensor per layer, O(h_i, t_i) for layers with
        targets, the output itself for the classification layer. Call in eval mode (in train
        mode the batch-norm running statistics would move)."""
        return [h if t is None else self.compare(h, t) for h, t in self.pairs(x)]

    def predict_exits(self, x: Tensor) -> Tensor:
        """The class predicted at every layer, (B, L)."""
        return torch.stack([z.argmax(1) for z in self.exit_logits(x)], 1)


def _neuron(features: int, model: ModelConfig, signal: SignalConfig) -> StaticNeuron:
    return StaticNeuron(
        features,
        batch_norm=model.batch_norm,
        slope=model.slope,
        dropout=model.dropout,
        bn_targets=signal.bn_targets,
        target_dropout=signal.target_dropout,
    )


def _dense(n_in: int, n_out: int, model: ModelConfig, signal: SignalConfig, flatten: bool):
    proj = Linear(n_in, n_out, bias=not model.batch_norm, grad=True, init="fan_in")
    return SignalLayer(proj, _neuron(n_out, model, signal), flatten=flatten)


def _conv(c_in, c_out, kernel, pool, model: ModelConfig, signal: SignalConfig) -> SignalLayer:
    proj = Conv2d(
        c_in,
        c_out,
        kernel,
        padding=kernel // 2,
        bias=not model.batch_norm,
        grad=True,
        init="fan_in",
    )
    return SignalLayer(proj, _neuron(c_out, model, signal), pool=pool, pool_stride=2)


def _output(n_in: int, classes: int, flatten: bool) -> SignalLayer:
    proj = Linear(n_in, classes, bias=True, grad=True, init="fan_in")
    neuron = StaticNeuron(classes, batch_norm=False, activation="identity")
    return SignalLayer(proj, neuron, flatten=flatten)


def build_layers(
    model: ModelConfig,
    image_shape: tuple[int, int, int],
    classes: int,
    signal: SignalConfig,
) -> tuple[list[SignalLayer], list[str], list[tuple[int, ...]]]:
    """The layers of ``model.arch`` for images (C, H, W): (layers, names, output shapes);
    ``signal`` sets how the neurons treat the target path (batch norm, dropout)."""
    c, hgt, wid = image_shape
    layers, names, shapes = [], [], []
    convs: list[tuple[int, int, int]] = []  # (channels, kernel, pool)
    if model.arch == "conv":
        convs = [(ch, model.kernel, model.pool) for ch in model.channels]
    elif model.arch == "vgg8b":
        spec = list(VGG8B_CHANNELS)
        for j, ch in enumerate(spec):
            if ch != "M":
                pool = 2 if j + 1 < len(spec) and spec[j + 1] == "M" else 0
                convs.append((ch * model.width, 3, pool))
    for k, (ch, kernel, pool) in enumerate(convs):
        layers.append(_conv(c, ch, kernel, pool, model, signal))
        c, hgt, wid = ch, pooled_size(hgt, pool, 2), pooled_size(wid, pool, 2)
        names.append(f"conv{k + 1}")
        shapes.append((c, hgt, wid))
    n, flatten = c * hgt * wid, True
    for k, size in enumerate(model.hidden):
        layers.append(_dense(n, size, model, signal, flatten))
        n, flatten = size, False
        names.append(f"fc{k + 1}")
        shapes.append((n,))
    layers.append(_output(n, classes, flatten))
    names.append("out")
    shapes.append((classes,))
    return layers, names, shapes


def target_shape(
    signal: SignalConfig,
    first: SignalLayer,
    image_shape: tuple[int, int, int],
    first_output: tuple[int, ...],
) -> tuple[int, ...]:
    """The shape of one first target for ``signal.into`` (``ctsp.nn.TARGETS_INTO``)."""
    into = TARGETS_INTO[signal.into]
    return into.shape(first.projection, image_shape, first_output, signal.sparse_features)


def build(
    model: ModelConfig,
    signal: SignalConfig,
    image_shape: tuple[int, int, int],
    classes: int,
) -> DiscreteNetwork:
    """The network of ``model`` with the target generator of ``signal`` (seed torch first)."""
    layers, names, shapes = build_layers(model, image_shape, classes, signal)
    shape = target_shape(signal, layers[0], image_shape, shapes[0])
    slope = model.slope if TARGETS_INTO[signal.into].after_first else None
    gen = make_generator(
        signal.generator, classes, shape, slope=slope, fixed=signal.fixed, eta=signal.eta
    )
    return DiscreteNetwork(
        layers,
        names,
        gen,
        into=signal.into,
        prediction=model.prediction,
        compare=model.compare,
        shapes=shapes,
    )


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())
