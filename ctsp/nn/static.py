"""The static neuron of discrete sigprop layers (paper Sec. III-IV): batch norm -> activation ->
dropout, and precise batch norm (:func:`recalibrate_batch_norm`).

Registries: :data:`ACTIVATIONS` and :data:`BN_TARGETS` (``signal.bn_targets``: where the
batch-norm statistics of the target path come from).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..registry import Registry


def _leaky_relu(x: Tensor, slope: float) -> Tensor:
    return nn.functional.leaky_relu(x, slope) if slope else torch.relu(x)


def _identity(x: Tensor, slope: float) -> Tensor:
    return x


# name -> activation(x, slope)
ACTIVATIONS = Registry(
    "activation",
    {
        "leaky_relu": _leaky_relu,  # leaky ReLU of slope model.slope (ReLU for 0)
        "identity": _identity,  # no activation
    },
)


@dataclass(frozen=True)
class BnTargets:
    """A ``signal.bn_targets`` choice: how batch norm treats the target path. ``pooled``: the
    inputs and targets pooled into one batch for the statistics; ``running``: the targets
    normalised with the running statistics (inference mode); neither: the statistics from the
    inputs only, the targets normalised with them (Sec. III-D)."""

    pooled: bool
    running: bool


BN_TARGETS: Registry[BnTargets] = Registry(
    "batch-norm target mode",
    {
        "input": BnTargets(pooled=False, running=False),
        "running": BnTargets(pooled=False, running=True),
        "joint": BnTargets(pooled=True, running=False),
    },
)


@dataclass(frozen=True)
class Shard:
    """This process's samples [lo, hi) of a minibatch of ``total`` (data-parallel replicas,
    ``ctsp.parallel.DataParallel``). ``reduce``: the sum of a tensor over the replicas,
    differentiable (its backward sums the gradients over the replicas). ``targets``: the target
    path's rows are per sample (sharded like the inputs); else they are the class targets, the
    same in every replica."""

    lo: int
    hi: int
    total: int
    targets: bool
    reduce: Callable[[Tensor], Tensor]

    def rows(self, x: Tensor) -> tuple[int, int, int]:
        """(first row, end row, rows of the whole minibatch) of ``x``, whose rows are this
        shard's samples (k rows each: k = 1, or the time steps or classes folded in)."""
        k = x.shape[0] // (self.hi - self.lo)
        return k * self.lo, k * self.hi, k * self.total


@contextlib.contextmanager
def sharded(net: nn.Module, shard: Shard):
    """Within: every :class:`StaticNeuron` of ``net`` sees ``shard`` of the minibatch: batch
    statistics over the whole minibatch, dropout masks the rows of the whole minibatch's."""
    neurons = [m for m in net.modules() if isinstance(m, StaticNeuron)]
    for m in neurons:
        m.shard = shard
    try:
        yield
    finally:
        for m in neurons:
            m.shard = None


class StaticNeuron(nn.Module):
    """Static nonlinearity of a discrete sigprop layer: batch norm -> activation -> dropout.

    No state of any kind per sample: the activity is a function of the current alone (paper
    Sec. IV: batch norm before the activation, leaky ReLU of slope 0.01, dropout after).
    :meth:`forward` takes the currents of the input path ``h`` (B, C) or (B, C, H, W) and of the
    target path ``t`` (R, C[, h, w]) or None, and returns both activities.

    Batch-norm statistics (per feature or channel), by ``bn_targets``:

    - ``"input"``: from the input path only; the targets are normalised with the same batch
      statistics, and only inputs update the running statistics (Sec. III-D, target-only);
    - ``"running"``: inputs use their batch statistics, targets the running statistics (the
      targets pass in inference mode);
    - ``"joint"``: inputs and targets pooled, as one batch norm over the concatenated batch.

    In eval mode both paths use the running statistics. The running statistics follow
    ``torch.nn.BatchNorm`` (momentum 0.1, unbiased running variance). Within :func:`sharded`
    (data-parallel replicas) the statistics are those of the whole minibatch, summed over the
    replicas (synchronised batch norm), and the dropout masks are the whole minibatch's rows.

    Dropout (training only) applies to the input path. The target path passes without it unless
    ``target_dropout`` (then with its own independent mask per target row): the m class targets
    share a large common part and differ in a small class-specific one, so independent masks
    add noise of the common part's size to every class comparison h . t_k. Where that
    comparison is not averaged over many positions (1x1 maps, flat layers, sparse targets) the
    noise drowns the class differences and the layer does not learn (docs/results.md, VGG8b).
    """

    def __init__(
        self,
        features: int,
        *,
        batch_norm: bool = True,
        activation: str = "leaky_relu",
        slope: float = 0.01,
        dropout: float = 0.0,
        bn_targets: str = "input",
        target_dropout: bool = False,
        momentum: float = 0.1,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        ACTIVATIONS.check(activation)
        BN_TARGETS.check(bn_targets)
        self.features, self.batch_norm, self.activation = features, batch_norm, activation
        self.slope, self.dropout, self.bn_targets = slope, dropout, bn_targets
        self.target_dropout = target_dropout
        self.momentum, self.eps = momentum, eps
        self.shard: Shard | None = None
        self.seed_dropout(None)
        if batch_norm:
            self.norm_weight = nn.Parameter(torch.ones(features))
            self.norm_bias = nn.Parameter(torch.zeros(features))
            self.register_buffer("running_mean", torch.zeros(features))
            self.register_buffer("running_var", torch.ones(features))

    def forward(self, h: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if self.batch_norm:
            h, t = self.normalize(h, t)
        h = self.act(h)
        t = None if t is None else self.act(t)
        if self.dropout > 0 and self.training:
            h = self.drop(h)
            if t is not None and self.target_dropout:
                t = self.drop(t, self.shard is not None and self.shard.targets)
        return h, t

    def seed_dropout(self, seed: int | None) -> None:
        """Draw the dropout masks from this neuron's own generator, seeded by ``seed`` (None:
        from torch's global one). A layer's masks then do not depend on what other layers drew
        before it, in one process or in a layer pipeline (``ctsp.parallel.LayerPipeline``)."""
        self._dropout_seed, self._generator = seed, None

    def drop(self, x: Tensor, in_shard: bool = True) -> Tensor:
        """Inverted dropout: x * m / (1 - p), m ~ Bernoulli(1 - p) per element. ``in_shard``:
        x's rows are the :attr:`shard` 's (its mask the rows of the whole minibatch's)."""
        seed = self._dropout_seed
        if seed is None:
            return nn.functional.dropout(x, self.dropout, True)
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(x.device).manual_seed(seed)
        if self.shard is None or not in_shard:
            keep = torch.empty_like(x).bernoulli_(1 - self.dropout, generator=self._generator)
        else:  # the whole minibatch's mask, in x's memory order (bernoulli_ fills in that order)
            lo, hi, rows = self.shard.rows(x)
            fmt = _memory_format(x)
            whole = x.new_empty((rows, *x.shape[1:])).to(memory_format=fmt)
            keep = whole.bernoulli_(1 - self.dropout, generator=self._generator)[lo:hi]
        return x * keep * (1 / (1 - self.dropout))

    def act(self, x: Tensor) -> Tensor:
        return ACTIVATIONS[self.activation](x, self.slope)

    def _affine(self, x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = self.norm_weight * torch.rsqrt(var + self.eps)
        return x * scale.view(shape) + (self.norm_bias - mean * scale).view(shape)

    def normalize(self, h: Tensor, t: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Batch norm of both paths (statistics as the class docstring says)."""
        w, b = self.norm_weight, self.norm_bias
        if not self.training:
            rm, rv = self.running_mean, self.running_var
            h = nn.functional.batch_norm(h, rm, rv, w, b, False, 0.0, self.eps)
            return h, None if t is None else self._affine(t, rm, rv)
        mode = BN_TARGETS[self.bn_targets]
        shard, joint = self.shard, mode.pooled and t is not None
        if joint or shard is not None:
            parts = [(h, True)] + ([(t, shard is None or shard.targets)] if joint else [])
            mean, var, n = _moments(parts, shard)
            t_stats = (mean, var)
            if mode.running:
                t_stats = (self.running_mean.clone(), self.running_var.clone())
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
            h_out = self._affine(h, mean, var).to(h.dtype)
            return h_out, None if t is None else self._affine(t, *t_stats).to(t.dtype)
        if t is not None:
            if mode.running:
                t = self._affine(t, self.running_mean.clone(), self.running_var.clone())
            else:
                dims = [0, *range(2, h.dim())]
                var, mean = torch.var_mean(h, dims, correction=0)
                t = self._affine(t, mean, var)
        rm, rv = self.running_mean, self.running_var
        h = nn.functional.batch_norm(h, rm, rv, w, b, True, self.momentum, self.eps)
        return h, t

    def extra_repr(self) -> str:
        return (
            f"{self.features}, batch_norm={self.batch_norm}, {self.activation}"
            f"(slope={self.slope}), dropout={self.dropout}, bn_targets={self.bn_targets}, "
            f"target_dropout={self.target_dropout}"
        )


def seed_dropout(net: nn.Module, seed: int) -> None:
    """Give every :class:`StaticNeuron` of ``net`` its own dropout generator, seeded by
    (``seed``, its place among the neurons) (:meth:`StaticNeuron.seed_dropout`)."""
    neurons = (m for m in net.modules() if isinstance(m, StaticNeuron))
    for k, neuron in enumerate(neurons):
        neuron.seed_dropout(seed * 1009 + k)


@torch.no_grad()
def recalibrate_batch_norm(net: nn.Module, batches) -> int:
    """Recompute the running statistics of every :class:`StaticNeuron` of ``net`` as the plain
    average of its batch statistics over ``batches`` (an iterable of input minibatches), each
    passed through ``net`` (``net(x)``, the inference path) in training mode without dropout
    and without any weight change ("precise batch norm"). The running averages of training
    (momentum 0.1) lag weights that move fast; these match the final weights. A neuron called
    several times per minibatch (spiking networks: once per time step) averages over all its
    calls. Modes, momenta and dropout rates are restored afterwards. Returns the number of
    minibatches used.
    """
    neurons = [m for m in net.modules() if isinstance(m, StaticNeuron) and m.batch_norm]
    saved = [(m.momentum, m.dropout) for m in neurons]
    calls = dict.fromkeys(neurons, 0)

    def count(module: StaticNeuron, args) -> None:
        calls[module] += 1
        module.momentum = 1.0 / calls[module]  # running = mean of the batch statistics so far

    hooks = [m.register_forward_pre_hook(count) for m in neurons]
    was = net.training
    for m in neurons:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
        m.dropout = 0.0
    net.train()
    k = 0
    try:
        for x in batches:
            net(x)
            k += 1
    finally:
        for hook in hooks:
            hook.remove()
        for m, (momentum, dropout) in zip(neurons, saved, strict=True):
            m.momentum, m.dropout = momentum, dropout
        net.train(was)
    return k


def _memory_format(x: Tensor) -> torch.memory_format:
    last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if last and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _moments(parts: list[tuple[Tensor, bool]], shard: Shard | None) -> tuple[Tensor, Tensor, int]:
    """Mean and biased variance per channel over the rows (and positions) of all ``parts`` —
    (x (N, C, ...), sharded) pairs — together, in float32, and the count. With a ``shard`` the
    sharded parts' sums are summed over the replicas (``shard.reduce``) and counted for the
    whole minibatch; the others (class targets, the same in every replica) count once."""
    c = parts[0][0].shape[1]
    parts = [(x.float(), s) for x, s in parts]  # the sums in float32, whatever the precision

    def total(f) -> Tensor:
        mine = [(f(x).sum([0, *range(2, x.dim())]), s) for x, s in parts]
        out = None
        for value in [v for v, s in mine if s]:
            out = value if out is None else out + value
        if shard is not None:
            out = shard.reduce(out)
        for value in [v for v, s in mine if not s]:
            out = out + value
        return out

    n = 0
    for x, s in parts:
        rows = shard.rows(x)[2] if shard is not None and s else x.shape[0]
        n += rows * (x.numel() // (x.shape[0] * c))
    mean = total(lambda x: x) / n
    shape = (1, -1) + (1,) * (parts[0][0].dim() - 2)
    m = mean.view(shape)
    var = total(lambda x: (x - m).square()) / n
    return mean, var, n
