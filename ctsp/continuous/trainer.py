"""The continuous-time sigprop trainer: free and clamped relaxations, CHL updates, epochs.

For every minibatch (paper Sec. V, Fig. 2c):

1. free phase: relax Eq. 13 with beta = 0 from zeros (or the example's persistent state) to s^0;
2. clamped phase: from s^0, relax with the output nudged towards the one-hot target d by beta
   (optionally a random sign per minibatch, or symmetric ±beta) to s^beta;
3. update every trained projection i -> j, the loop-back included, by Eq. 14:
   dW = lr / (beta * B) * (rho(s_j^beta) - rho(s_j^0)).T @ rho(s_i^0), biases likewise.

Evaluation runs the free phase alone and predicts argmax of the output rates. :class:`Trainer`
writes no files and prints nothing: ``ctsp.runs.fit`` drives it epoch by epoch (the
``EpochTrainer`` protocol) and writes the run directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, DivergenceError
from ..parallel import SingleProcess
from ..registry import Registry
from .field import Field
from .rules import RULES
from .solvers import Relaxation, RelaxSpec, Status, relax


@dataclass(frozen=True)
class BetaSign:
    """A ``train.beta_sign`` choice: ``signs(generator, n)`` the n minibatches' signs of beta
    (+1 or -1) from the epoch's seeded generator; ``negative``: whether any can be -1."""

    signs: Callable[[torch.Generator, int], list[int]]
    negative: bool


BETA_SIGNS: Registry[BetaSign] = Registry(
    "beta sign",
    {
        "positive": BetaSign(lambda gen, n: [1] * n, negative=False),
        "random": BetaSign(  # a random sign per minibatch
            lambda gen, n: (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).tolist(),
            negative=True,
        ),
    },
)

# keys (or key prefixes ending in ".") that a resumed run may change
RESUMABLE_KEYS = ("train.epochs", "device", "threads", "record.", "train.health", "parallel.")


def resumable_keys(config) -> tuple[str, ...]:
    """:data:`RESUMABLE_KEYS`, and for a run with an ODE method also ``solver.max_sweeps``,
    which only the "steady" method reads (so runs made before the key existed resume)."""
    return RESUMABLE_KEYS + (() if config.solver.method == "steady" else ("solver.max_sweeps",))


@dataclass(frozen=True)
class PhaseStats:
    """Mean steps, function evaluations and matrix passes per minibatch of one phase, and the
    converged share."""

    steps: float
    nfe: float
    converged: float
    passes: float = 0.0


# a relaxation's statistics a minibatch reports, in PhaseStats' order
STAT_FIELDS = ("steps", "nfe", "converged", "passes")


@dataclass(frozen=True)
class Phases:
    """One minibatch's relaxations and the rates Eq. 14 needs.

    ``free_rates`` rho(s^0); ``nudged_rates`` rho(s^beta); ``base_rates`` the rates the update
    subtracts: rho(s^0), or rho(s^-beta) for symmetric nudging; ``beta`` the signed effective
    nudging (2 beta for symmetric nudging), so that dW = lr / (beta B) (nudged - base).T @ pre.
    """

    free: Relaxation
    clamped: Relaxation
    free_rates: Tensor
    base_rates: Tensor
    nudged_rates: Tensor
    beta: float


def check_sizes(config, data) -> None:
    """Refuse ``network.sizes`` that do not fit the dataset's inputs and classes."""
    sizes = list(config.network.sizes)
    if sizes[0] != data.n_features or sizes[-1] != data.classes:
        raise ConfigError(
            f"network.sizes {sizes} do not match dataset {data.name}: it has "
            f"{data.n_features} input features ({'x'.join(map(str, data.image_shape))}) and "
            f"{data.classes} classes, so sizes must be [{data.n_features}, ..., {data.classes}]"
        )


class Trainer:
    """Runs the phases and updates of one network (a ``models.LayeredNetwork`` or any network with
    its ``populations``, ``edges``, ``projections``, ``biases``, ``tau`` and ``neuron``) under a
    ``RunConfig``; no files, no printing."""

    learning_keys = ("train.lr", "train.loop_lr", "train.beta", "solver.step")

    def __init__(self, net, config, device: torch.device, n_train: int) -> None:
        self.net, self.config, self.device = net, config, device
        self.rule = RULES[config.train.rule](config)
        # train.lr along the input path (input, ff1, …), train.loop_lr for the loop-back; the
        # feedback projections never learn by themselves
        path = [e.name for e in net.edges if e.owns_bias]
        self.lr = {e.name: 0.0 for e in net.edges} | dict(zip(path, config.train.lr, strict=True))
        self.lr["loop"] = config.train.loop_lr
        self.persistent = net.zero_state(n_train) if config.train.persistent else None
        self.lr_scale = 1.0  # the schedule's factor of the current epoch (begin_epoch sets it)
        self.free_spec, self.clamped_spec = RelaxSpec.phases(config.solver)
        self.backend = SingleProcess()  # what runs the minibatches (ctsp.parallel.BACKENDS)
        self._batch: tuple[Tensor, float] | None = None  # the minibatch's indices and sign
        self._shard: tuple[int, Callable] | None = None  # in a replica: (whole batch, reduce)

    def relax_phase(self, x_current: Tensor, s0: Tensor, beta, target, spec: RelaxSpec):
        """One phase of this network from ``s0``: input current ``x_current`` (W_in x + b_1),
        nudge ``beta`` towards ``target`` (None: free), relaxed as ``spec`` says (the run's
        ``free_spec`` or ``clamped_spec``, or one changed, e.g. to record the trajectory)."""
        return relax(Field(self.net, x_current, beta, target), s0, spec)

    def free_phase(self, x: Tensor, s0: Tensor | None = None):
        s0 = self.net.zero_state(x.shape[0]) if s0 is None else s0
        current = self.net.input_current(x)
        return current, self.relax_phase(current, s0, 0.0, None, self.free_spec)

    def phases(self, x: Tensor, y: Tensor, idx: Tensor, sign: float) -> Phases:
        """Free phase then clamped phase for one minibatch (persistent states updated)."""
        net, tc = self.net, self.config.train
        s0 = self.persistent[idx] if self.persistent is not None else None
        current, free = self.free_phase(x, s0)
        if self.persistent is not None:
            self.persistent[idx] = free.state
        target = torch.nn.functional.one_hot(y, net.sizes[-1]).to(x.dtype)
        beta, spec = tc.beta * sign, self.clamped_spec
        if tc.symmetric:  # +beta and -beta as one batch of 2B; update from their difference
            b = x.shape[0]
            betas = torch.cat([x.new_full((b, 1), beta), x.new_full((b, 1), -beta)])
            clamped = self.relax_phase(
                current.repeat(2, 1), free.state.repeat(2, 1), betas, target.repeat(2, 1), spec
            )
            nudged, base, beta_eff = clamped.state[:b], clamped.state[b:], 2 * beta
        else:
            clamped = self.relax_phase(current, free.state, beta, target, spec)
            nudged, base, beta_eff = clamped.state, free.state, beta
        check_relaxed(free, clamped)
        rho = self.rates
        return Phases(free, clamped, rho(free.state), rho(base), rho(nudged), beta_eff)

    def rates(self, state: Tensor) -> Tensor:
        """rho(s) of a relaxed state. Every solver ends on the rate function's bounds'
        projection, so for a rate function that is the identity within its bounds (the hard
        sigmoid) the state is its own rate: no copy."""
        return state if self.net.neuron.fn.identity_within_bounds else self.net.neuron.rho(state)

    def update(self, x: Tensor, ph: Phases) -> None:
        """The rule of ``train.rule`` (:data:`RULES`; Eq. 14 by default) with this epoch's
        learning rates (over the whole minibatch in a replica)."""
        lr = {k: v * self.lr_scale for k, v in self.lr.items()}
        batch, reduce = self._shard if self._shard is not None else (x.shape[0], None)
        self.rule.update(self.net, x, ph, lr, batch, reduce)

    # the Stage interface of ctsp.parallel's backends (one process or data-parallel replicas)

    resend_state = False  # rank 0 changes nothing between epochs that a replica lacks

    def begin_epoch(self, epoch: int, lr: float | None = None) -> None:
        """Set the schedule's factor of (0-based) ``epoch`` (``lr``: as rank 0 sent it)."""
        self.lr_scale = self.config.train.lr_factor(epoch) if lr is None else lr
        self.epoch_lr = self.lr_scale

    def batches(self, data, epoch: int):
        """The training minibatches (x, y) of ``epoch``, in the order and with the beta signs
        drawn from a generator seeded by (seed, epoch) (so a resumed run repeats an
        uninterrupted one, and every replica draws the same); each minibatch's indices and sign
        are kept for :meth:`train_batch`."""
        tc, n = self.config.train, data.train_x.shape[0]
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        batches = torch.randperm(n, generator=gen).split(tc.batch_size)
        signs = BETA_SIGNS[tc.beta_sign].signs(gen, len(batches))
        for idx, sign in zip(batches, signs, strict=True):
            self._batch = (idx.to(self.device), float(sign))
            yield data.train_x[idx].to(self.device), data.train_y[idx].to(self.device)

    def learn(self, x: Tensor, y: Tensor, idx: Tensor, sign: float):
        """Phases and update of one minibatch (``idx``: its samples' indices, for persistent
        states; ``sign``: of beta); returns (training errors, free, clamped stats)."""
        ph = self.phases(x, y, idx, sign)
        self.update(x, ph)
        errors = int((self.net.predict(ph.free.state) != y).sum())
        return errors, ph.free.stats, ph.clamped.stats

    @torch.no_grad()
    def train_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`learn` of the minibatch :meth:`batches` yielded last (x, y: all of it, or
        this replica's shard); returns (the phases' statistics :data:`STAT_FIELDS`, float64;
        the wrong predictions, one count)."""
        errors, free, clamped = self.learn(x, y, *self._batch)
        stats = [getattr(s, f) for s in (free, clamped) for f in STAT_FIELDS]
        return torch.tensor(stats, dtype=torch.float64), torch.tensor([errors])

    @contextlib.contextmanager
    def sharded(self, lo: int, hi: int, total: int, reduce):
        """Within: the minibatches are shared by replicas, this one trains samples [lo, hi) of
        ``total``, and ``reduce`` sums the update over the replicas."""
        self._shard = (total, reduce)
        try:
            yield
        finally:
            self._shard = None

    def optimizers(self) -> list:
        return []  # the rule changes the weights itself (its sums reduced: ``sharded``)

    def state(self) -> dict:
        return {"net": self.net.state_dict()}

    def load_state(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])

    def fingerprint(self) -> Tensor:
        """A float64 sum per parameter and buffer of the network: equal in replicas that agree."""
        tensors = [*self.net.parameters(), *self.net.buffers()]
        return torch.stack([t.detach().double().sum() for t in tensors])

    @torch.no_grad()
    def train_epoch(self, data, epoch: int, bar=None, on_batch=None):
        """One pass over the training set in minibatches on the backend; ``on_batch(epoch, k)``
        after each minibatch's update (the run's recorders). Returns (training errors,
        free-phase stats, clamped-phase stats), the stats one per minibatch.
        """
        self.begin_epoch(epoch)
        wrong, seen, free_stats, clamped_stats = 0, 0, [], []
        steps = self.backend.run(self, self.batches(data, epoch), epoch)
        for k, (stats, w, size) in enumerate(steps):
            if on_batch is not None:
                on_batch(epoch, k)
            wrong, seen = wrong + int(w.sum()), seen + size
            values = stats.tolist()
            free_stats.append(PhaseStats(*values[: len(STAT_FIELDS)]))
            clamped_stats.append(PhaseStats(*values[len(STAT_FIELDS) :]))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"train err {wrong / seen:.3f}", refresh=False)
        check_finite(*self.net.parameters())
        return wrong, free_stats, clamped_stats

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[float, PhaseStats, float]:
        """Test error (fraction) of the free phase from zeros, its mean statistics, and the
        fraction of hidden neurons whose free-phase rate is saturated (at 0 or 1)."""
        bs = self.config.train.eval_batch_size
        hidden = slice(0, self.net.populations[-1].start)
        wrong, flat, stats = 0, 0, []
        for i in range(0, x.shape[0], bs):
            xb = x[i : i + bs].to(self.device)
            _, free = self.free_phase(xb)
            check_relaxed(free)
            wrong += int((self.net.predict(free.state).cpu() != y[i : i + bs]).sum())
            flat += int(self.net.neuron.saturated(free.state[:, hidden]).sum())
            stats.append(free.stats)
        n = max(x.shape[0], 1)
        return wrong / n, mean_stats(stats), flat / (n * max(hidden.stop, 1))

    # the EpochTrainer protocol of ctsp.runs.fit

    def train_metrics(self, data, epoch: int, bar, on_batch=None) -> dict:
        wrong, free, clamped = self.train_epoch(data, epoch, bar, on_batch)
        fs, cs = mean_stats(free), mean_stats(clamped)
        return {
            "train_error": wrong / data.train_x.shape[0],
            "free_steps": fs.steps,
            "clamped_steps": cs.steps,
            "free_nfe": fs.nfe,
            "clamped_nfe": cs.nfe,
            "free_passes": fs.passes,
            "clamped_passes": cs.passes,
            "free_converged": fs.converged,
            "clamped_converged": cs.converged,
        }

    def eval_metrics(self, data) -> dict:
        test_error, test_stats, saturated = self.evaluate(data.test_x, data.test_y)
        row = {
            "test_error": test_error,
            "test_free_steps": test_stats.steps,
            "test_saturated": saturated,
        }
        if data.val_x.shape[0]:
            row["val_error"] = self.evaluate(data.val_x, data.val_y)[0]
        return row

    def extra_state(self) -> dict:
        return {"persistent": self.persistent}

    def load_extra_state(self, ckpt: dict) -> None:
        if self.persistent is not None:
            self.persistent.copy_(ckpt["persistent"])

    def summary(self, row: dict) -> str:
        passes = row["free_passes"] + row["clamped_passes"]
        return (
            f"steps free {row['free_steps']:.0f} clamped {row['clamped_steps']:.0f}, "
            f"{passes:.0f} matrix passes"
        )


def mean_stats(stats) -> PhaseStats:
    if not stats:
        return PhaseStats(0.0, 0.0, 0.0)
    return PhaseStats(
        float(np.mean([s.steps for s in stats])),
        float(np.mean([s.nfe for s in stats])),
        float(np.mean([s.converged for s in stats])),
        float(np.mean([s.passes for s in stats])),
    )


def check_relaxed(*relaxations: Relaxation) -> None:
    """Raise :class:`DivergenceError` if a relaxation ended on NaN or Inf."""
    if any(r.stats.status is Status.NONFINITE for r in relaxations):
        raise DivergenceError("the simulation diverged: NaN or Inf in the network state")


def check_finite(*tensors: Tensor) -> None:
    """Raise :class:`DivergenceError` if a tensor holds NaN or Inf: one sum per tensor (a NaN or
    Inf makes it non-finite; so would finite values summing past the float range, 3e38 in
    float32, which no bounded rate reaches)."""
    for t in tensors:
        if not bool(torch.isfinite(t.sum())):
            raise DivergenceError("the simulation diverged: NaN or Inf in the network state")
