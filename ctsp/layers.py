"""The shared layer abstractions: projection, neuron model, learning rule.

A sigprop layer is three separable parts (docs/architecture.md):

1. a *projection* — the synapses, a map of presynaptic activity to a postsynaptic current
   (:class:`Linear`, :class:`Conv2d`). The same module carries input-path and target-path activity.
   By default its weights are Glorot-uniform and outside autograd (``requires_grad=False``: the
   continuous model updates them by CHL); ``grad=True`` makes them autograd parameters, ``bias``
   adds a bias, ``init="fan_in"`` draws U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's default).
2. a *neuron model* — how current becomes activity. Its state is explicit: passed in and returned,
   never stored in the module (:class:`RateNeuron` for the continuous model of Eq. 13;
   :class:`StaticNeuron`, batch norm -> leaky ReLU -> dropout, for discrete networks, which has
   no state at all).
3. a *local learning rule* — how a projection updates from what reached it (:class:`CHL`, Eq. 14;
   :class:`LPred`, Eq. 9, and :class:`ClassifierCE`, each with the layer's own optimizer).

:class:`SignalLayer` composes a projection, a static neuron and optional max-pooling into one
discrete sigprop layer that maps the pair [h, t] (Eq. 2-3). Networks in ``models`` compose these
with a target generator (``ctsp.signals``); runners drive them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import ConfigError, DivergenceError
from .plasticity import chl_bias_update, chl_update


def glorot_uniform_(weight: Tensor, fan_in: int, fan_out: int) -> Tensor:
    """Glorot/Xavier uniform initialisation: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


INITS = ("glorot", "fan_in")


def _init_projection(weight: Tensor, bias: Tensor | None, init: str, fan_in: int, fan_out: int):
    if init == "glorot":
        glorot_uniform_(weight, fan_in, fan_out)
        return  # biases stay zero
    if init != "fan_in":
        raise ConfigError(f"unknown initialisation {init!r}; valid: {', '.join(INITS)}")
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            bias.uniform_(-bound, bound)


class Linear(nn.Module):
    """Dense projection: current = rates @ W.T (+ b), W shaped (n_out, n_in) like nn.Linear.

    Defaults (the continuous model): no bias (biases belong to the postsynaptic population, see
    :class:`RateNeuron` users), weights outside autograd, Glorot-uniform. ``trainable`` says
    whether a plasticity rule may change the weights; ``grad=True`` makes weight and bias autograd
    parameters (discrete sigprop, trained by a per-layer optimizer).
    """

    def __init__(
        self,
        n_in: int,
        n_out: int,
        *,
        trainable: bool = True,
        bias: bool = False,
        grad: bool = False,
        init: str = "glorot",
    ) -> None:
        super().__init__()
        self.n_in, self.n_out, self.trainable = n_in, n_out, trainable
        self.weight = nn.Parameter(torch.empty(n_out, n_in), requires_grad=grad)
        if bias:
            self.bias = nn.Parameter(torch.zeros(n_out), requires_grad=grad)
        else:
            self.register_parameter("bias", None)
        _init_projection(self.weight, self.bias, init, n_in, n_out)

    def forward(self, rates: Tensor) -> Tensor:
        """Map presynaptic rates (B, n_in) to a postsynaptic current (B, n_out)."""
        if self.bias is None:
            return rates @ self.weight.T
        return nn.functional.linear(rates, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.n_in} -> {self.n_out}, trainable={self.trainable}, bias={self.bias is not None}"
        )


class Conv2d(nn.Module):
    """Convolutional projection: current = conv2d(rates, W) (+ b), W shaped (c_out, c_in, k, k).

    Same options as :class:`Linear`. :meth:`once` applies the kernel at a single position, for
    sparse targets (paper Sec. III-E: no weight sharing when convolving the target).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        padding: int = 0,
        trainable: bool = True,
        bias: bool = False,
        grad: bool = False,
        init: str = "glorot",
    ) -> None:
        super().__init__()
        self.c_in, self.c_out, self.kernel = c_in, c_out, kernel
        self.padding, self.trainable = padding, trainable
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel), requires_grad=grad)
        if bias:
            self.bias = nn.Parameter(torch.zeros(c_out), requires_grad=grad)
        else:
            self.register_parameter("bias", None)
        receptive = kernel * kernel
        _init_projection(self.weight, self.bias, init, c_in * receptive, c_out * receptive)

    def forward(self, rates: Tensor) -> Tensor:
        """Map presynaptic rates (B, c_in, H, W) to a current (B, c_out, H', W')."""
        return nn.functional.conv2d(rates, self.weight, self.bias, padding=self.padding)

    def once(self, rates: Tensor) -> Tensor:
        """The kernel applied at one position: (R, c_in, a, b) with a, b <= k -> (R, c_out, 1, 1).

        The input is zero-filled (centred) to (c_in, k, k) and met by the whole kernel once, with
        no padding: a sparse target of the weights' shape (Sec. III-E), or a 1x1 target map that
        meets the kernel's centre.
        """
        a, b = rates.shape[-2:]
        k = self.kernel
        if a > k or b > k:
            raise ValueError(f"a map of {a}x{b} is larger than the {k}x{k} kernel")
        top, left = (k - a) // 2, (k - b) // 2
        filled = nn.functional.pad(rates, (left, k - b - left, top, k - a - top))
        out = filled.flatten(1) @ self.weight.flatten(1).T
        if self.bias is not None:
            out = out + self.bias
        return out[:, :, None, None]


@dataclass(frozen=True)
class RateFunction:
    """A monotone rate function rho with its derivative rho' and the state bounds it implies.

    ``bounds`` is (low, high) when states are kept inside an interval (hard sigmoid: [0, 1]),
    ``None`` when states are unbounded. ``identity_within_bounds``: rho(s) = s and rho'(s) = 1
    for states inside the bounds, so a projected state needs neither computed.
    """

    name: str
    rho: Callable[[Tensor], Tensor]
    rho_prime: Callable[[Tensor], Tensor]
    bounds: tuple[float, float] | None
    identity_within_bounds: bool = False


def _hard_sigmoid_prime(s: Tensor) -> Tensor:
    # Closed interval: a state projected onto 0 or 1 can still move back inside.
    return ((s >= 0.0) & (s <= 1.0)).to(s.dtype)


def _sigmoid_prime(s: Tensor) -> Tensor:
    r = torch.sigmoid(s)
    return r * (1.0 - r)


RATE_FUNCTIONS: dict[str, RateFunction] = {
    "hard_sigmoid": RateFunction(
        "hard_sigmoid", lambda s: s.clamp(0.0, 1.0), _hard_sigmoid_prime, (0.0, 1.0), True
    ),
    "sigmoid": RateFunction("sigmoid", torch.sigmoid, _sigmoid_prime, None),
}


def rate_function(name: str) -> RateFunction:
    """Look up a rate function by name; unknown names are rejected with the valid list."""
    try:
        return RATE_FUNCTIONS[name]
    except KeyError:
        valid = ", ".join(sorted(RATE_FUNCTIONS))
        raise ConfigError(f"unknown rate function {name!r}; valid: {valid}") from None


class RateNeuron:
    """Rate neuron of Eq. 13: rho(s), rho'(s) and the state bounds of its rate function.

    Stateless: the state s (B, n) is passed to every method; the leak s_j / r_j uses the
    network's per-neuron time constants.
    """

    def __init__(self, rate: str) -> None:
        self.fn = rate_function(rate)
        self.name = self.fn.name

    def rho(self, s: Tensor) -> Tensor:
        return self.fn.rho(s)

    def rho_prime(self, s: Tensor) -> Tensor:
        return self.fn.rho_prime(s)


class CHL:
    """Contrastive Hebbian rule of Eq. 14 for one projection and its postsynaptic biases.

    dW = lr / (beta * B) * (rho(s_post^beta) - rho(s_post^0)).T @ rho(s_pre^0), and likewise for
    the biases with a presynaptic rate of 1. ``beta`` is the signed nudging strength that produced
    ``post_nudged`` (for symmetric nudging, 2 * beta and the -beta rates as ``post_free``).
    """

    def __init__(self, backend: str = "auto") -> None:
        self.backend = backend

    def apply(
        self,
        weight: Tensor,
        bias: Tensor | None,
        pre: Tensor,
        post_free: Tensor,
        post_nudged: Tensor,
        lr: float,
        beta: float,
    ) -> None:
        scale = lr / (beta * pre.shape[0])
        chl_update(weight.data, pre, post_free, post_nudged, scale, backend=self.backend)
        if bias is not None:
            chl_bias_update(bias.data, post_free, post_nudged, scale)


# ---------------------------------------------------------------------------------------------
# Discrete sigprop (paper Sec. III-IV): static neuron, comparisons O, L_pred, the composed layer
# ---------------------------------------------------------------------------------------------

ACTIVATIONS = ("leaky_relu", "identity")


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
    ``torch.nn.BatchNorm`` (momentum 0.1, unbiased running variance).

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
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        if bn_targets not in ("input", "running", "joint"):
            raise ConfigError(
                f"unknown batch-norm mode {bn_targets!r}; valid: input, running, joint"
            )
        self.features, self.batch_norm, self.activation = features, batch_norm, activation
        self.slope, self.dropout, self.bn_targets = slope, dropout, bn_targets
        self.target_dropout = target_dropout
        self.momentum, self.eps = momentum, eps
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
            h = nn.functional.dropout(h, self.dropout, True)
            if t is not None and self.target_dropout:
                t = nn.functional.dropout(t, self.dropout, True)
        return h, t

    def act(self, x: Tensor) -> Tensor:
        if self.activation == "identity":
            return x
        return nn.functional.leaky_relu(x, self.slope) if self.slope else torch.relu(x)

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
        if self.bn_targets == "joint" and t is not None:
            mean, var, n = _joint_moments(h, t)
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / max(n - 1, 1), self.momentum)
            return self._affine(h, mean, var), self._affine(t, mean, var)
        if t is not None:
            if self.bn_targets == "running":
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


def _joint_moments(h: Tensor, t: Tensor) -> tuple[Tensor, Tensor, int]:
    """Mean and biased variance per channel over the rows (and positions) of h and t together."""
    dh, dt = [0, *range(2, h.dim())], [0, *range(2, t.dim())]
    n_h, n_t = h.numel() // h.shape[1], t.numel() // t.shape[1]
    n = n_h + n_t
    mean = (h.sum(dh) + t.sum(dt)) / n
    shape = (1, -1) + (1,) * (h.dim() - 2)
    m = mean.view(shape)
    var = ((h - m).square().sum(dh) + (t - m).square().sum(dt)) / n
    return mean, var, n


def _flat_pair(h: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
    """h (B, D), targets (m, D) or (B, m, D), |h|^2 per sample (B,) and the scale of O.

    Maps (B, C, H, W) against targets of the same map size: D = C*H*W, scale 1/(H*W) (the
    channel dot product averaged over positions). Against 1x1 target maps (sparse targets): the
    target is broadcast over positions, i.e. h is averaged over positions, D = C, scale 1.
    """
    if h.dim() == 4 and t.shape[-2:] != h.shape[-2:]:
        if tuple(t.shape[-2:]) != (1, 1):
            raise ValueError(f"targets {tuple(t.shape)} do not match outputs {tuple(h.shape)}")
        hf = h.mean((2, 3))
        return hf, t.flatten(-3), h.square().sum(1).mean((1, 2)), 1.0
    positions = h.shape[2] * h.shape[3] if h.dim() == 4 else 1
    hf = h.flatten(1)
    return hf, t.flatten(-(h.dim() - 1)), hf.square().sum(1), 1.0 / positions


def _dot(hf: Tensor, tf: Tensor) -> Tensor:
    return hf @ tf.T if tf.dim() == 2 else torch.einsum("bd,bmd->bm", hf, tf)


def o_dot(h: Tensor, t: Tensor) -> Tensor:
    """O_dot (Eq. 6): y[b, k] = h_b . t_k, the comparison of every output with every class target.

    Args:
        h: outputs (B, F) or maps (B, C, H, W).
        t: class targets shared by the batch, (m, ...) like one sample of h (or (m, C, 1, 1)
            against maps: a sparse target, broadcast over positions), or per-sample targets
            (B, m, ...) (target-input and target-loop generators: t[b, k] is sample b's target
            for class k).

    Returns: logits (B, m). For maps the channel dot product is averaged over positions.
    """
    hf, tf, _, scale = _flat_pair(h, t)
    return _dot(hf, tf) * scale


def o_l2(h: Tensor, t: Tensor) -> Tensor:
    """O_l2 (Eq. 7) as a similarity: y[b, k] = -||h_b - t_k||^2 (maps: averaged over positions).

    Shapes as :func:`o_dot`.
    """
    hf, tf, hsq, scale = _flat_pair(h, t)
    return (2 * _dot(hf, tf) - hsq[:, None] - tf.square().sum(-1)) * scale


COMPARISONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"dot": o_dot, "l2": o_l2}


def comparison(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Look up a comparison O by name ("dot", "l2")."""
    try:
        return COMPARISONS[name]
    except KeyError:
        valid = ", ".join(COMPARISONS)
        raise ConfigError(f"unknown comparison {name!r}; valid: {valid}") from None


class LPred:
    """The prediction loss L_pred (Eq. 9) of one layer, with that layer's own optimizer (Adam).

    loss = CE(y*, O(h_i, t_i)): each output h_b is compared with the m class targets (Eq. 8, the
    layer's early-exit prediction) and the cross entropy pushes it towards its own class's
    target and away from the others. ``h``: (B, ...), ``t``: (m, ...) or (B, m, ...) (see
    :func:`o_dot`), ``y``: (B,) int64 labels. Sign: Eq. 9 writes CE(y*, -O_dot); here the
    comparison itself is the logit, so that the predicted class is the most similar target
    (argmax of Eq. 5/8), as in the paper's implementation; O_l2 is a negative distance.

    ``params`` are the layer's parameters (and, for the first layer, the target generator's):
    :meth:`update` back-propagates the loss into these only, since the layer's inputs arrive
    detached, and steps the optimizer. With a ``scaler`` (``torch.amp.GradScaler``, float16
    autocast) the loss is scaled before the backward pass and the step is skipped when the
    scaled gradients overflow.
    """

    def __init__(self, params, *, compare: str = "dot", lr: float = 5e-4, scaler=None) -> None:
        self.compare = comparison(compare)
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr) if self.params else None
        self.scaler = scaler  # a torch.amp.GradScaler (float16 training) or None

    def logits(self, h: Tensor, t: Tensor | None) -> Tensor:
        """The layer's prediction logits (B, m): O(h, t), Eq. 8."""
        return self.compare(h, t)

    def loss(self, h: Tensor, t: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        """(L, logits) for one minibatch."""
        logits = self.logits(h, t)
        return nn.functional.cross_entropy(logits, y), logits

    def update(self, h: Tensor, t: Tensor | None, y: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer step on this layer's loss; returns the (detached) loss and logits.

        Raises DivergenceError, before stepping, when the loss is NaN or Inf.
        """
        loss, logits = self.loss(h, t, y)
        if not bool(torch.isfinite(loss)):
            raise DivergenceError("training diverged: NaN or Inf in a layer's loss")
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                self.optimizer.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
        return loss.detach(), logits.detach()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups if self.optimizer is not None else ():
            group["lr"] = lr

    def state_dict(self) -> dict:
        return self.optimizer.state_dict() if self.optimizer is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state)


class ClassifierCE(LPred):
    """The classification layer's rule (Fig. 2b): cross entropy of its output with the labels.

    ``h`` (B, m) are the logits; targets are not used.
    """

    def __init__(self, params, *, lr: float = 5e-4, scaler=None) -> None:
        super().__init__(params, lr=lr, scaler=scaler)

    def logits(self, h: Tensor, t: Tensor | None) -> Tensor:
        return h


def pooled_size(n: int, pool: int, stride: int) -> int:
    """Side of a map of side n after max-pooling (pool, stride); maps smaller than the window
    are left as they are."""
    return n if pool == 0 or n < pool else (n - pool) // stride + 1


def max_pool(x: Tensor, pool: int, stride: int) -> Tensor:
    """Max-pooling (window ``pool``, ``stride``) of maps (N, C, H, W); maps smaller than the
    window, flat features and ``pool = 0`` are left as they are (see :func:`pooled_size`)."""
    if pool == 0 or x.dim() < 4 or min(x.shape[-2:]) < pool:
        return x
    return nn.functional.max_pool2d(x, pool, stride)


class SignalLayer(nn.Module):
    """One discrete sigprop layer (Eq. 2-3): [h_i, t_i] = pool(f(P [h_{i-1}, t_{i-1}])).

    The projection ``P`` (:class:`Linear` or :class:`Conv2d`) maps the input path and the
    target path with the same weights; ``f`` is a :class:`StaticNeuron` (batch statistics from
    the input path); ``pool`` an optional max-pool (window ``pool``, stride ``pool_stride``) on
    both paths, skipped for maps smaller than the window. ``flatten``: maps are flattened before
    a Linear projection.

    ``h`` (B, ...) and ``t`` (R, ...) (R target rows: m class targets, or B*m per-sample ones).
    Targets smaller than the input (sparse targets, Sec. III-E):

    - Conv2d: a target map smaller than h's map meets the kernel once, with no weight sharing
      (:meth:`Conv2d.once`): (R, c_in, a, b) -> (R, c_out, 1, 1), a, b <= k;
    - Linear: a target with fewer features than the input is zero-filled to the input size; a
      smaller map is zero-filled (at the top left) to h's map size before flattening.
    """

    def __init__(
        self,
        projection: Linear | Conv2d,
        neuron: StaticNeuron,
        *,
        pool: int = 0,
        pool_stride: int = 2,
        flatten: bool = False,
    ) -> None:
        super().__init__()
        self.projection, self.neuron = projection, neuron
        self.pool, self.pool_stride, self.flatten = pool, pool_stride, flatten

    def forward(self, h: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if self.flatten and h.dim() > 2:
            if t is not None and t.dim() > 2:
                c, a, b = h.shape[1:]
                t = nn.functional.pad(t, (0, b - t.shape[-1], 0, a - t.shape[-2])).flatten(1)
            h = h.flatten(1)
        current = self.projection(h)
        target_current = None if t is None else self.project_target(h, t)
        h, t = self.neuron(current, target_current)
        if self.pool:
            h = self._pool(h)
            t = None if t is None else self._pool(t)
        return h, t

    def project_target(self, h: Tensor, t: Tensor) -> Tensor:
        """The projection of the target path (sparse targets as the class docstring says)."""
        p = self.projection
        if isinstance(p, Conv2d):
            return p(t) if t.shape[-2:] == h.shape[-2:] else p.once(t)
        if t.shape[1] < p.n_in:
            t = nn.functional.pad(t, (0, p.n_in - t.shape[1]))
        return p(t)

    def _pool(self, x: Tensor) -> Tensor:
        return max_pool(x, self.pool, self.pool_stride)
