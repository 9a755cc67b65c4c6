"""The spiking convolutional network of Table V (paper Sec. VI), built from ctsp's layers.

Layout (``model.arch = "snn"``; reference width c = 128):

    conv(1 -> c) -> BN -> IF -> 2x2 max-pool        for each of model.channels
    conv(c -> c) -> BN -> IF -> 2x2 max-pool
    Linear(49c -> 16c) -> IF                         for each of model.hidden
    Linear(16c -> m), averaged over the T steps      the classification layer (Fig. 2b)

Conv kernel ``model.kernel`` ("same" padding) and pool window ``model.pool`` (stride 2): the
bundled configs set 3 and 2. Batch norm (``model.batch_norm``) follows the conv layers only, as
in Table V; the dense layers have a bias instead. Weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
The image is fed at every one of the T = ``model.time_steps`` steps (direct encoding). The
neuron is ``model.neuron`` (``ctsp.spiking.NEURON_MODELS``; IF, as the paper); its threshold is
``model.threshold``, or the rule's default (0.5 for sigprop, 1.0 for bp and shallow).

:class:`SpikingNetwork` is a :class:`models.discrete.DiscreteNetwork` whose layers are
:class:`ctsp.spiking.SpikingLayer` and :class:`ctsp.spiking.Readout`: the target generator, the
parameter partition, the early exits and the target-loop feedback are the discrete ones; what
is new is :meth:`SpikingNetwork.pairs` (spike trains between layers, each layer's loss on its
time-averaged output) and :meth:`SpikingNetwork.forward`.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import Tensor

from ctsp.config import DiscreteRunConfig
from ctsp.nn import (
    TARGETS_INTO,
    Conv2d,
    Linear,
    SignalLayer,
    StaticNeuron,
    TargetGenerator,
    make_generator,
    pooled_size,
)
from ctsp.spiking import (
    NEURON_MODELS,
    RULES,
    SPIKE_LOSSES,
    Readout,
    SpikingLayer,
    repeat_in_time,
)

from .discrete import DiscreteNetwork, target_shape


class SpikingNetwork(DiscreteNetwork):
    """Spiking layers, a classification layer and a target generator.

    Args:
        layers: :class:`SpikingLayer` s, input side first, then the :class:`Readout`.
        names: one per layer (``conv1``, …, ``fc1``, ``out``).
        signal: the target generator; its targets enter like the input ("input"/"sparse":
            a target fed at every step into layer 1) or stand for layer 1's output ("hidden":
            the time-averaged output; fed at every step into layer 2).
        compare: the comparison O of L_pred and the early exits.
        time_steps: T.
        spike_loss: what each layer's loss sees: "surrogate" (the firing rate mean_t s_t, with
            the surrogate gradient) or "voltage" (the mean pre-spike membrane voltage).
    """

    # contiguous (NCHW) maps: channels-last made a minibatch 1.55x slower (benchmarks/step.py,
    # snn-fmnist-sp-voltage on an AVX2 CPU; docs/performance.md)
    channels_last = False

    def __init__(
        self,
        layers: list,
        names: list[str],
        signal: TargetGenerator,
        *,
        into: str = "input",
        compare: str = "dot",
        time_steps: int = 4,
        spike_loss: str = "surrogate",
    ) -> None:
        super().__init__(layers, names, signal, into=into, prediction="classifier", compare=compare)
        self.time_steps, self.spike_loss = time_steps, spike_loss

    @property
    def readout(self) -> Readout:
        return self.layers[-1]

    def features(self, x: Tensor) -> Tensor:
        """The spike train (T, B, ...) of the last spiking layer, the input path only."""
        return self.forward_layers(x, 0, len(self.layers) - 1)

    def forward(self, x: Tensor) -> Tensor:
        """Inference (and BP-surrogate): the classifier's logits (B, m), averaged over the T
        steps, in float32. Differentiable through the surrogate spikes of every layer."""
        return self.forward_layers(x)

    def forward_layers(self, h: Tensor, start: int = 0, stop: int | None = None) -> Tensor:
        """The input path alone through layers ``start`` to ``stop - 1``: from the image x
        (fed at every step) at ``start = 0``, else from the spike train (T, B, ...) of layer
        ``start - 1``; the spike train of the last of them, or the logits for the readout."""
        if start == 0:
            h = repeat_in_time(h, self.time_steps)
        for layer in self.layers[start:stop]:
            h = layer(h).float() if layer is self.readout else layer(h).h
        return h

    def pairs(
        self,
        x: Tensor | None,
        start: int = 0,
        stop: int | None = None,
        carry: tuple[Tensor, Tensor | None] | None = None,
        feedback: Tensor | None = None,
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """Forward pass with the learning signal: yields each layer's loss inputs in order.

        For a spiking layer (h_i, t_i): the time averages over the T steps of its output for
        the input path (B, ...) and the target path ((m, ...), or (B, m, ...) for per-sample
        generators) — surrogate spikes (firing rates) or pre-spike voltages (``spike_loss``) —
        in float32. With ``into = "hidden"`` t_1 is the generator's output itself. For the
        classification layer: (z, None), z the time-averaged logits.

        The spike trains go on to the next layer detached (no gradient crosses a layer; the
        generator's output is not detached before layer 1). The next layer is computed only
        when the caller asks for it, after it has used (h_i, t_i) (so layer i has been updated;
        its outputs came from the weights before the update). Under ``train.precision``'s
        autocast (the trainer's) the layers' products run in the low type; what is yielded is
        float32.

        Layers ``start`` to ``stop - 1`` only (a stage of a layer pipeline), as
        :meth:`DiscreteNetwork.pairs`; here the carry between stages is the spike trains
        (T, B, ...) of the input path and (T, m or B*m, ...) of the target path, detached.
        """
        sig, steps = self.signal, self.time_steps
        stop = len(self.layers) if stop is None else stop
        voltage = SPIKE_LOSSES[self.spike_loss].voltage
        if start == 0:
            if sig.needs_feedback and feedback is None:
                feedback = self.feedback(x)
            h, t = repeat_in_time(x, steps), None
            if self.into != "hidden":
                t = repeat_in_time(self._rows(self.first_targets(x, None, feedback)), steps)
        else:
            h, t = carry
        b = h.shape[1]
        for i in range(start, stop):
            layer = self.layers[i]
            if layer is self.readout:
                z = layer(h.detach()).float()
                yield z, None
                return z.detach(), None
            t_in = None if t is None else (t if i == 0 else t.detach())
            out = layer(h.detach(), t_in, voltage=voltage)
            h, t = out.h, out.t
            seen_h, seen_t = (out.h_voltage, out.t_voltage) if voltage else (out.h, out.t)
            view_h = seen_h.mean(0).float()
            if i == 0 and TARGETS_INTO[self.into].after_first:
                view_t = self.first_targets(x, view_h, feedback)
                t = repeat_in_time(self._rows(view_t), steps)
            else:
                view_t = self._unrows(seen_t.mean(0).float(), b)
            yield view_h, view_t
        return h.detach(), None if t is None else t.detach()

    def _rows(self, t: Tensor) -> Tensor:
        """Targets -> rows: per-sample (B, m, ...) -> (B*m, ...)."""
        return t.flatten(0, 1) if self.signal.per_sample else t

    def _unrows(self, t: Tensor, b: int) -> Tensor:
        return t.unflatten(0, (b, self.classes)) if self.signal.per_sample else t


def threshold(config: DiscreteRunConfig) -> float:
    """``model.threshold``, or the rule's default (``default_threshold`` of the learner class:
    0.5 sigprop, 1.0 bp and shallow)."""
    return config.model.threshold or RULES[config.train.rule].default_threshold


def build_layers(
    config: DiscreteRunConfig, image_shape: tuple[int, int, int], classes: int
) -> tuple[list, list[str], list[tuple[int, ...]]]:
    """The spiking layers and the readout for images (C, H, W): (layers, names, output shapes)."""
    model, bn = config.model, config.signal.bn_targets
    theta = threshold(config)
    surrogate = not (config.train.rule == "sigprop" and SPIKE_LOSSES[model.spike_loss].voltage)
    neuron = NEURON_MODELS[model.neuron]
    c, hgt, wid = image_shape
    layers, names, shapes = [], [], []
    for k, ch in enumerate(model.channels):
        proj = Conv2d(
            c,
            ch,
            model.kernel,
            padding=model.kernel // 2,
            bias=not model.batch_norm,
            grad=True,
            init="fan_in",
        )
        current = StaticNeuron(
            ch, batch_norm=model.batch_norm, activation="identity", bn_targets=bn
        )
        layers.append(
            SpikingLayer(
                SignalLayer(proj, current),
                neuron(theta, surrogate=surrogate),
                pool=model.pool,
                pool_stride=2,
            )
        )
        c, hgt, wid = ch, pooled_size(hgt, model.pool, 2), pooled_size(wid, model.pool, 2)
        names.append(f"conv{k + 1}")
        shapes.append((c, hgt, wid))
    n, flatten = c * hgt * wid, True
    for k, size in enumerate(model.hidden):
        proj = Linear(n, size, bias=True, grad=True, init="fan_in")
        current = StaticNeuron(size, batch_norm=False, activation="identity")
        synapse = SignalLayer(proj, current, flatten=flatten)
        layers.append(SpikingLayer(synapse, neuron(theta, surrogate=surrogate)))
        n, flatten = size, False
        names.append(f"fc{k + 1}")
        shapes.append((n,))
    proj = Linear(n, classes, bias=True, grad=True, init="fan_in")
    identity = StaticNeuron(classes, batch_norm=False, activation="identity")
    layers.append(Readout(SignalLayer(proj, identity, flatten=flatten)))
    names.append("out")
    shapes.append((classes,))
    return layers, names, shapes


def build(
    config: DiscreteRunConfig, image_shape: tuple[int, int, int], classes: int
) -> SpikingNetwork:
    """The spiking network of ``config.model`` with the target generator of ``config.signal``
    (seed torch first). The layers are drawn before the generator, so every rule starts from
    the same weights."""
    model, signal = config.model, config.signal
    layers, names, shapes = build_layers(config, image_shape, classes)
    shape = target_shape(signal, layers[0].synapse, image_shape, shapes[0])
    slope = model.slope if TARGETS_INTO[signal.into].after_first else None
    gen = make_generator(
        signal.generator, classes, shape, slope=slope, fixed=signal.fixed, eta=signal.eta
    )
    return SpikingNetwork(
        layers,
        names,
        gen,
        into=signal.into,
        compare=model.compare,
        time_steps=model.time_steps,
        spike_loss=model.spike_loss,
    )
