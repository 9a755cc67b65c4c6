"""Relaxation of the network dynamics by solvers chosen by name (the registry :data:`SOLVERS`).

One protocol for every method, time-stepping or fixed-point: ``solver.solve(field, s0, spec)``
relaxes the phase ``field`` (a :class:`~ctsp.continuous.field.Field`) from the state ``s0``
(B, N) as the frozen :class:`RelaxSpec` says (method, duration, step, tolerance, …; built once
per phase from ``config.solver`` by :meth:`RelaxSpec.phases`) and returns a :class:`Relaxation`:
the final state, its :class:`RelaxStats` (steps, field evaluations, matrix passes, the final
residual and a :class:`Status`), and optionally the trajectory. :func:`relax` is
``SOLVERS[spec.method].solve``. Time is in units of the neuron time constant r.

Time-stepping methods integrate ds/dt = field(t, s) (torchdiffeq): fixed-grid ones ('euler'
default, 'midpoint', 'rk4', …) step with ``spec.step`` and project the state onto the rate
function's bounds before every step; adaptive ones ('dopri5', …) use ``rtol``/``atol`` and
project at every check point. With ``tol > 0`` the phase runs in chunks of ``check_every``
steps and stops once the residual of every sample is below ``tol``; ``duration`` is then the
cap. The residual is max_j |ds_j/dt| of the projected motion: over the last step for fixed-grid
methods (no extra field evaluation), of the projected field at the check point for adaptive
ones. The fixed-point method "steady" (:class:`Steady`) sweeps the populations to their steady
state instead.

A new method is a class with ``name``, ``ode`` (integrates in time) and ``solve``, and one
entry in :data:`SOLVERS` (a time-stepping one subclasses :class:`TimeStepping` and gives
``advance``). torchdiffeq's Adams methods are refused with the reason.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from torchdiffeq import odeint

from ..errors import ConfigError, DivergenceError
from ..registry import Registry
from .field import block_residual, block_state, current, projected_residual, recurrent_edges


class Status(enum.Enum):
    """How a relaxation ended."""

    CONVERGED = "converged"  # every sample's residual below tol
    STEP_LIMIT = "step limit"  # the phase's duration integrated (with tol > 0: not converged)
    SWEEP_LIMIT = "sweep limit"  # "steady": max_sweeps done (with tol > 0: not converged)
    NONFINITE = "non-finite"  # NaN or Inf in the final state


@dataclass(frozen=True)
class RelaxStats:
    """What a relaxation cost and where it ended.

    steps: fixed-grid steps taken (for adaptive methods: steps of the check grid; for
    "steady": layer sweeps); nfe: vector-field evaluations, residual evaluations included (for
    "steady": sweeps, each computing every population's current once); time: integrated
    duration (0 for "steady"); status: how it ended (:class:`Status`);
    residual: the largest per-sample residual at the end — for fixed-grid methods the projected
    motion of the last step max_j |Delta s_j| / dt (for Euler: the projected field at the start
    of that step), for adaptive methods and "steady" max_j |ds_j/dt| of the projected field at
    the end; passes: matrix products of the recurrent projections (the input current
    W_in x + b_1 is computed once per phase by every method and not counted).
    """

    steps: int
    nfe: int
    time: float
    status: Status
    residual: float
    passes: int = 0

    @property
    def converged(self) -> bool:
        """Every sample's residual below ``tol`` (False when no tolerance was set)."""
        return self.status is Status.CONVERGED


@dataclass(frozen=True)
class Relaxation:
    """The result of a solve: final state (B, N), stats, and the optional trajectory.

    ``times`` (T,) and ``trajectory`` (T, B, N) hold the state on the recorded grid when one was
    asked for; ``residuals`` (T, B) the per-sample residual at those times (at t = 0 the projected
    field; later, for fixed-grid methods, the projected motion of the step that ended there).
    The last recorded point is the final state. ``ctsp.continuous.export.relaxation_dataset``
    gives them as an xarray Dataset.
    """

    state: Tensor
    stats: RelaxStats
    times: Tensor | None = None
    trajectory: Tensor | None = None
    residuals: Tensor | None = None


@dataclass(frozen=True)
class RelaxSpec:
    """How to relax one phase (validated when made: one-line ConfigErrors).

    method: a name in :data:`SOLVERS`; duration: phase length in time units (the cap when
    ``tol`` is set; "steady" ignores it); step: step size eps of fixed-grid methods (first
    step of adaptive ones); tol: steady-state tolerance on max_j |ds_j/dt| per sample, 0 = no
    early stop; check_every: steps between residual checks when ``tol`` > 0; rtol, atol:
    adaptive methods' tolerances; max_sweeps: the sweeps of "steady" (their cap with ``tol``);
    record_every: keep the state every this many steps (None: no trajectory; "steady" records
    none).
    """

    method: str = "euler"
    duration: float = 10.0
    step: float = 0.5
    tol: float = 0.0
    check_every: int = 5
    rtol: float = 1e-5
    atol: float = 1e-6
    max_sweeps: int = 3
    record_every: int | None = None

    def __post_init__(self) -> None:
        SOLVERS.check(self.method, "solver.method")
        if self.duration < 0 or self.step <= 0:
            raise ConfigError(
                f"solver needs duration >= 0 and step > 0; got {self.duration}, {self.step}"
            )
        if self.max_sweeps < 1:
            raise ConfigError(f"solver 'steady' needs max_sweeps >= 1; got {self.max_sweeps}")
        if self.record_every is not None and not SOLVERS[self.method].ode:
            raise ConfigError(
                f"solver {self.method!r} records no trajectory: record with an ODE method (the "
                "run's recorder integrates the recorded samples with euler, see "
                "analysis.recording)"
            )

    @classmethod
    def phases(cls, solver) -> tuple[RelaxSpec, RelaxSpec]:
        """The free and the clamped phase's specs from a ``config.solver`` section."""
        keys = ("method", "step", "tol", "check_every", "rtol", "atol", "max_sweeps")
        shared = {k: getattr(solver, k) for k in keys}
        return cls(duration=solver.free_duration, **shared), cls(
            duration=solver.clamped_duration, **shared
        )

    def but(self, **changes) -> RelaxSpec:
        """This spec with ``changes`` (e.g. ``record_every``, ``method``)."""
        return replace(self, **changes)


class Counted:
    """A field with its evaluations counted for one solve: ``nfe`` calls, ``passes`` matrix
    products of recurrent projections; torchdiffeq calls ``callback_step`` before every
    fixed-grid step (the projection)."""

    def __init__(self, field) -> None:
        self.field, self.nfe, self.passes = field, 0, 0
        self._per_call = recurrent_edges(field.net)

    def __call__(self, t: Tensor, state: Tensor) -> Tensor:
        self.nfe += 1
        self.passes += self._per_call
        return self.field(t, state)

    def callback_step(self, t0: Tensor, state: Tensor, dt: Tensor) -> None:
        self.field.project_(state)

    def residual(self, state: Tensor) -> Tensor:
        """Per-sample projected residual max_j |ds_j/dt| at ``state`` (one evaluation), (B,)."""
        dsdt = self(torch.zeros((), device=state.device), state)
        return projected_residual(dsdt, state, self.field.bounds)

    def stats(self, steps: int, time: float, status: Status, residual: Tensor) -> RelaxStats:
        return RelaxStats(steps, self.nfe, time, status, float(residual.max()) if residual.numel()
                          else 0.0, self.passes)  # fmt: skip


def _ended(state: Tensor, status: Status) -> Status:
    """``status``, or NONFINITE where the state holds NaN or Inf (one sum: a NaN or Inf makes it
    non-finite; so would finite values past the float range, which no bounded rate reaches)."""
    return status if bool(torch.isfinite(state.sum())) else Status.NONFINITE


# the most steps one solver call takes: torchdiffeq walks its grid in Python over
# ``grid.unbind()``, which makes one tensor object per point up front in one C call (2e7 steps:
# gigabytes, and a SIGINT or SIGTERM that waits for it). Longer phases go in chunks of this many.
MAX_CHUNK = 1000


class TimeStepping:
    """A torchdiffeq method: the phase in chunks of steps (:meth:`advance`, given by the
    subclass), checked against ``tol`` after each and recorded every ``record_every`` steps."""

    ode = True
    adaptive = False  # steps of its own size between the checks
    evaluates_in_bounds = False  # every evaluation at a projected state (rho, rho' skipped)

    def __init__(self, name: str) -> None:
        self.name = name

    def advance(self, field, state, t0, k, dt, spec) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def solve(self, field, s0: Tensor, spec: RelaxSpec) -> Relaxation:
        """Integrate ``field`` from ``s0`` (not modified) over ``[0, spec.duration]``."""
        n_steps = step_count(spec.duration, spec.step)
        dt = spec.duration / n_steps if n_steps else spec.step
        every = spec.record_every or (spec.check_every if spec.tol > 0 else max(n_steps, 1))
        chunk = min(every, MAX_CHUNK)
        in_bounds = self.evaluates_in_bounds and field.bounds is not None
        counted = Counted(replace(field, in_bounds=in_bounds))
        state = field.project_(s0.clone())
        record = spec.record_every is not None
        last = counted.residual(state) if record or n_steps == 0 else None
        times, traj, res = [0.0], [state.clone()], [last]
        done, status = 0, Status.STEP_LIMIT
        while done < n_steps:
            k = min(chunk, n_steps - done)
            state, last = self.advance(counted, state, done * dt, k, dt, spec)
            done += k
            if record:
                times.append(done * dt)
                traj.append(state.clone())
                res.append(last)
            if spec.tol > 0 and bool((last < spec.tol).all()):
                status = Status.CONVERGED
                break
        stats = counted.stats(done, done * dt, _ended(state, status), last)
        if not record:
            return Relaxation(state, stats)
        times = torch.tensor(times, dtype=torch.float64)
        return Relaxation(state, stats, times, torch.stack(traj), torch.stack(res))


class FixedGrid(TimeStepping):
    """A fixed-grid torchdiffeq method ("euler", "rk4", …): steps of exactly ``dt``, the state
    projected onto the rate function's bounds before every step (``Counted.callback_step``).

    The residual of a chunk is the projected motion of its last step,
    max_j |s_j(t) - s_j(t - dt)| / dt, which costs no extra field evaluation (for Euler it is
    exactly the projected field at t - dt).
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        # projected Euler evaluates the field only at projected states
        self.evaluates_in_bounds = name == "euler"

    def advance(self, field, state, t0, k, dt, spec) -> tuple[Tensor, Tensor]:
        """Integrate ``k`` steps of size ``dt`` from ``t0``: (projected state, residual (B,))."""
        grid = torch.linspace(t0, t0 + k * dt, k + 1, dtype=torch.float64)
        points = grid[[0, -2, -1]] if k >= 2 else grid
        options = {"grid_constructor": lambda func, y0, t: grid}
        sol = odeint(field, state, points, method=self.name, options=options)
        new, prev = field.field.project_(sol[-1]), field.field.project_(sol[-2])
        return new, (new - prev).abs_().amax(1) / dt


class Adaptive(TimeStepping):
    """An adaptive torchdiffeq method ("dopri5", …) with ``rtol``/``atol`` and first step
    ``step``; projected at the end of every chunk, whose residual is the projected field
    there (``Counted.residual``)."""

    adaptive = True

    def advance(self, field, state, t0, k, dt, spec) -> tuple[Tensor, Tensor]:
        """Integrate from ``t0`` to ``t0 + k dt``: (projected state, residual (B,)); a state
        whose field is NaN (the step shrinks to nothing) ends as NaN (status NONFINITE)."""
        span = torch.linspace(t0, t0 + k * dt, k + 1, dtype=torch.float64)[[0, -1]]
        options = {"first_step": spec.step}
        try:
            sol = odeint(field, state, span, method=self.name, rtol=spec.rtol, atol=spec.atol,
                         options=options)  # fmt: skip
        except AssertionError as e:  # torchdiffeq's "underflow in dt"
            if bool(torch.isfinite(field(t0, state).sum())):
                raise DivergenceError(f"solver {self.name!r}: {e} at t = {t0:g}") from None
            return torch.full_like(state, math.nan), state.new_full(state.shape[:1], math.nan)
        new = field.field.project_(sol[-1])
        return new, field.residual(new)


def sweep_groups(net) -> tuple[tuple[int, ...], ...]:
    """The order in which :class:`Steady` sets the populations of ``net``: groups updated one
    after the other, with no projection inside a group (so a group's populations can be set
    from the same state). Every projection from a later group into an earlier one ends in the
    first group, so that after a sweep only the first group can be off its steady state.

    - Every backward projection ends in the first population (sigprop's loop network, a
      feed-forward chain): one population per group, in order, h1 first.
    - Otherwise (EP's feedback into every layer): alternate layers, h1, h3, … then h2, h4, …
      (Scellier et al. 2023's exact block updates).

    Raises ConfigError for a self-projection, or a network whose alternate layers are joined
    (e.g. a loop-back between two odd-numbered layers beside feedback)."""
    n = len(net.populations)
    inner = [e for e in net.edges if e.src >= 0]
    if all(e.src < e.dst or e.dst == 0 for e in inner) and not any(e.src == e.dst for e in inner):
        return tuple((k,) for k in range(n))
    groups = (tuple(range(0, n, 2)), tuple(range(1, n, 2)))
    for e in inner:
        if e.src % 2 == e.dst % 2:
            raise ConfigError(
                f"solver 'steady' sets alternate layers together, but projection {e.name!r} "
                f"joins populations {e.src} and {e.dst} of the same group; use an ODE method "
                f"({', '.join(ode_methods())})"
            )
    return groups


class Steady:
    """The steady state of Eq. 13 by exact population updates (block Gauss-Seidel), not by
    integrating time.

    One sweep sets every population, group by group (:func:`sweep_groups`: in order for
    sigprop's loop network, alternate layers for EP's), to its steady state given the others
    (``field.block_state``: s = clip(r I) for a hidden population, the nudged output's
    s = clip(r (I + beta d) / (1 + r beta))). After a sweep every population outside the first
    group is at its fixed point given the others, so the residual of the whole network — the
    projected max_j |ds_j/dt| that the ODE stop uses — is the first group's, computed from the
    currents that start the next sweep (for the loop network: h1's, one loop-back product).
    Sweeps continue until every sample's residual is below ``tol`` or ``max_sweeps`` are done;
    the phase duration does not apply.

    For sigprop's loop network the sweeps are a fixed-point iteration around the loop: they
    converge when the loop's gain is below one, as in the bundled networks
    (docs/performance.md); a loop strong enough to make them oscillate ends at ``max_sweeps``
    with the status SWEEP_LIMIT and its residual in the stats. For EP's symmetric network each
    population update is the exact minimiser of the Hopfield energy in that population, so every
    sweep lowers the energy. Needs a rate function that is the identity within its bounds (the
    hard sigmoid), populations that :func:`sweep_groups` can order (:meth:`check_network`), and
    a nudge with 1 + r beta > 0 on every output neuron (:func:`check_nudge`): with
    beta <= -1/r the nudge cancels or reverses the leak, the output has no interior fixed point
    and runs to a bound, and which bound can depend on the path — the loop can then settle
    elsewhere than the ODE does. (Sending such outputs to their bounds was measured to learn
    worse than nudging with a positive sign only: docs/results.md.)
    """

    ode = False
    adaptive = False
    name = "steady"

    def __init__(self, lag: bool | None = None) -> None:
        # read the tolerance test one sweep late (None: where the state is on a GPU)
        self.lag = lag

    @staticmethod
    def check_network(net) -> tuple[tuple[int, ...], ...]:
        """Refuse a network whose steady state this method cannot find (one-line ConfigError);
        its :func:`sweep_groups`."""
        fn = net.neuron.fn
        if not fn.identity_within_bounds:
            raise ConfigError(
                f"solver 'steady' needs a rate function that is the identity within its bounds "
                f"(hard_sigmoid): rate {fn.name!r} has no closed-form population update; use an "
                f"ODE method ({', '.join(ode_methods())})"
            )
        return sweep_groups(net)

    def solve(self, field, s0: Tensor, spec: RelaxSpec) -> Relaxation:
        """Sweep from ``s0`` (not modified; projected first) to the phase's steady state."""
        net, pops = field.net, field.net.populations
        groups = self.check_network(net)
        check_nudge(net, field.beta)
        # one contiguous tensor per population (the matrix products read them faster than
        # column slices of the flat state); joined again at the end
        s = [field.project_(s0[:, cols].clone()) for cols in pops]
        lag = s0.device.type == "cuda" if self.lag is None else self.lag
        sweeps, passes = 0, self._output_first(field, s) if field.target is not None else 0
        pending = None
        while True:
            for g, group in enumerate(groups):
                # within the bounds rho(s) = s, so the state is the rate
                currents = [current(net, s, k, field.input_current) for k in group]
                passes += sum(recurrent_edges(net, k) for k in group)
                if g == 0 and sweeps > 0:
                    ended, pending = self._stop(field, s, group, currents, (sweeps, passes),
                                                spec, pending, lag)  # fmt: skip
                    if ended is not None:
                        return ended
                for k, cur in zip(group, currents, strict=True):
                    block_state(net, k, cur, field.beta, field.target, out=s[k])
            sweeps += 1

    @staticmethod
    def _output_first(field, s: list[Tensor]) -> int:
        """Set the nudged output to its steady state (the nudge changes the output's equation
        alone: a phase started from a free fixed point then does not begin by recomputing
        h1 ... h_L); its matrix passes."""
        net, last = field.net, len(s) - 1
        cur = current(net, s, last, field.input_current)
        block_state(net, last, cur, field.beta, field.target, out=s[last])
        return recurrent_edges(net, last)

    def _stop(self, field, s, group, currents, counts, spec: RelaxSpec, pending, lag: bool):
        """Whether the phase ends before this sweep (``counts``: the sweeps and matrix passes
        so far): (its relaxation or None, the tolerance test still to be read or None). The
        residual is computed where it decides something: every sweep with a tolerance, else
        after the last one. With ``lag`` the test of a sweep is read at the next one (from the
        host, without waiting for the device: it has the next sweep to work on), and a sweep
        that passed it returns its state as kept then: the same relaxation, one speculative
        sweep of work later."""
        if pending is not None and pending.passed():
            return pending.relaxation, None
        tol, cap = spec.tol, spec.max_sweeps
        if not (tol > 0 or counts[0] >= cap):
            return None, None
        res = self._residual(field, s, group, currents)
        if lag and counts[0] < cap:
            return None, _Test((res < tol).all(), torch.cat(s, 1), res, counts)
        converged = tol > 0 and bool((res < tol).all())
        if not (converged or counts[0] >= cap):
            return None, None
        status = Status.CONVERGED if converged else Status.SWEEP_LIMIT
        return self._result(torch.cat(s, 1), status, res, *counts), None

    @staticmethod
    def _residual(field, s: list[Tensor], group, currents) -> Tensor:
        """Per-sample projected residual of the populations of ``group`` (B,)."""
        net = field.net
        parts = [block_residual(net, k, cur, s[k], field.beta, field.target)
                 for k, cur in zip(group, currents, strict=True)]  # fmt: skip
        return functools.reduce(torch.maximum, parts)

    @staticmethod
    def _result(state: Tensor, status: Status, res: Tensor, sweeps: int, passes: int):
        """The relaxation that ended on ``state`` after ``sweeps`` (residual ``res``)."""
        stats = RelaxStats(sweeps, sweeps, 0.0, _ended(state, status), float(res.max()), passes)
        return Relaxation(state, stats)


@dataclass
class _Test:
    """A sweep's tolerance test on its way to the host (:meth:`Steady._stop`), with what the
    phase ends on if it passed: the state then (a copy), its residual and counts."""

    passed_on_device: Tensor
    state: Tensor
    res: Tensor
    counts: tuple[int, int]

    def __post_init__(self) -> None:
        self.event = None
        if self.passed_on_device.device.type == "cuda":
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            self.passed_on_device = host.copy_(self.passed_on_device, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()

    def passed(self) -> bool:
        if self.event is not None:
            self.event.synchronize()
        return bool(self.passed_on_device)

    @property
    def relaxation(self) -> Relaxation:
        return Steady._result(self.state, Status.CONVERGED, self.res, *self.counts)


SOLVERS: Registry[TimeStepping | Steady] = Registry(
    "solver",
    {
        **{m: FixedGrid(m) for m in ("euler", "midpoint", "heun2", "heun3", "rk4")},
        **{m: Adaptive(m) for m in ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")},
        "steady": Steady(),
    },
    refused={
        "explicit_adams": "torchdiffeq's explicit Adams method diverges on ds/dt = -s at the "
        "step sizes used here (3.5e11 at t = 5 with step 0.1)",
        "implicit_adams": "torchdiffeq's Adams methods restart their multistep history at every "
        "chunk, so results would depend on solver.check_every and record.stride",
    },
)


def check_nudge(net, beta) -> None:
    """Refuse a nudge for which the output has no interior fixed point: 1 + r beta <= 0."""
    if isinstance(beta, float) and beta == 0.0:
        return
    r = net.tau[net.populations[-1]]
    b = torch.as_tensor(beta, dtype=r.dtype, device=r.device).reshape(-1, 1)
    if not bool((1.0 + r * b > 0).all()):
        raise ConfigError(
            f"solver 'steady': the nudge beta = {float(b.min()):g} with time constant r = "
            f"{float(r.max()):g} gives 1 + r beta <= 0, where the nudged output has no steady "
            f"state (it runs to a bound); nudge with |beta| < 1/r when negative "
            f'(train.beta_sign = "positive", or a smaller train.beta) or use an ODE method'
        )


def ode_methods() -> tuple[str, ...]:
    """The registered methods that integrate Eq. 13 in time (all but "steady")."""
    return tuple(m for m, solver in SOLVERS.items() if solver.ode)


def step_count(duration: float, step: float) -> int:
    """Steps of a phase of ``duration``: the step is shortened to fit a whole number of them."""
    return max(1, math.ceil(duration / step - 1e-9)) if duration > 0 else 0


def relax(field, s0: Tensor, spec: RelaxSpec) -> Relaxation:
    """Relax the phase ``field`` from ``s0`` (B, N; not modified) as ``spec`` says: the solver
    ``SOLVERS[spec.method]``'s :meth:`solve`."""
    return SOLVERS[spec.method].solve(field, s0, spec)
