"""Relaxation of the network dynamics by solvers chosen by name (the registry :data:`SOLVERS`).

``relax(field, s0, duration, config)`` integrates ds/dt = field(t, s) from s0 for ``duration`` time
units (units of the neuron time constant) and returns a :class:`Relaxation`: the final state and
its statistics (steps, function evaluations, converged or not, final residual), and optionally
the trajectory on a time grid.

Fixed-grid methods ('euler' default, 'midpoint', 'rk4', …) step with ``config.step`` and project
the state onto the rate function's bounds before every step; adaptive methods ('dopri5', …)
use ``rtol``/``atol`` and are projected at every check point. With ``config.tol > 0`` the phase
is integrated in chunks of ``check_every`` steps and stops early once the residual of every
sample is below ``tol``; ``duration`` is then the cap. The residual is max_j |ds_j/dt| of the
projected motion: over the last step for fixed-grid methods (no extra field evaluation), of the
projected field at the check point for adaptive methods.

A solver is an object with ``advance(field, state, t0, k, dt, ...)`` (k steps of dt from t0 ->
the projected state and the per-sample residual), ``adaptive`` and ``evaluates_in_bounds``;
:class:`FixedGrid` and :class:`Adaptive` wrap torchdiffeq's methods. A new method is one class
and one entry in :data:`SOLVERS`. torchdiffeq's Adams methods are refused with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torchdiffeq import odeint

from ..errors import ConfigError
from ..registry import Registry
from .field import block_residual, block_state, current, recurrent_edges

TIME_UNITS = "r"  # the neuron time constant


@dataclass(frozen=True)
class RelaxStats:
    """What a relaxation cost and where it ended.

    steps: fixed-grid steps taken (for adaptive methods: steps of the check grid; for
    "steady": layer sweeps); nfe: vector-field evaluations, residual evaluations included (for
    "steady": sweeps, each computing every population's current once); time: integrated
    duration (0 for "steady");
    converged: every sample's residual below ``tol`` (False when no tolerance was set);
    residual: the largest per-sample residual at the end — for fixed-grid methods the projected
    motion of the last step max_j |Delta s_j| / dt (for Euler: the projected field at the start
    of that step), for adaptive methods and "steady" max_j |ds_j/dt| of the projected field at
    the end; passes: matrix products of the recurrent projections (the input current
    W_in x + b_1 is computed once per phase by every method and not counted).
    """

    steps: int
    nfe: int
    time: float
    converged: bool
    residual: float
    passes: int = 0


@dataclass(frozen=True)
class Relaxation:
    """The result of :func:`relax`: final state (B, N), stats, and the optional trajectory.

    ``times`` (T,) and ``trajectory`` (T, B, N) hold the state on the recorded grid when one was
    asked for; ``residuals`` (T, B) the per-sample residual at those times (at t = 0 the projected
    field; later, for fixed-grid methods, the projected motion of the step that ended there).
    The last recorded point is the final state. :meth:`to_xarray` gives them as a Dataset.
    """

    state: Tensor
    stats: RelaxStats
    times: Tensor | None = None
    trajectory: Tensor | None = None
    residuals: Tensor | None = None

    def to_xarray(
        self,
        populations: dict[str, slice] | None = None,
        *,
        phase: str | None = None,
        samples=None,
        labels=None,
        time_unit: float = 1.0,
    ):
        """The recorded trajectory as an :class:`xarray.Dataset` (needs ``record_every``).

        Args:
            populations: name -> column slice of the flat state (e.g. ``dict(zip(
                net.population_names, net.populations))``): one variable per population, dims
                (time, sample, neuron_<name>). None: one variable ``state`` with dims
                (time, sample, neuron).
            phase: a scalar coordinate ``phase`` (e.g. "free", "clamped"), for combining phases.
            samples: sample ids, (B,) (default 0 … B-1); labels: a coordinate ``label`` (B,).
            time_unit: the neuron time constant r in the solver's time units: ``time`` is the
                solver's time / r and the residual |ds/dt| * r, both in units of r.

        Besides the states: ``residual`` (time, sample), max_j |ds_j/dt| (see
        :class:`Relaxation`); scalars ``end_time`` (the last recorded time: the phase's end),
        ``steps``, ``nfe`` and ``converged`` from the stats.
        """
        import numpy as np
        import xarray as xr

        if self.trajectory is None:
            raise ValueError("no trajectory was recorded: call relax(..., record_every=k)")
        traj = self.trajectory.detach().cpu().numpy()
        batch = traj.shape[1]
        time = self.times.detach().cpu().numpy().astype(np.float64) / time_unit
        sample = np.arange(batch) if samples is None else np.asarray(samples)
        if populations is None:
            variables = {"state": (("time", "sample", "neuron"), traj, {"long_name": "state s"})}
        else:
            variables = {
                name: (
                    ("time", "sample", f"neuron_{name}"),
                    traj[:, :, cols],
                    {"long_name": f"state s of {name}"},
                )
                for name, cols in populations.items()
            }
        for _, _, attrs in variables.values():
            attrs["units"] = "1"  # dimensionless: the rate is rho(s)
        variables["residual"] = (
            ("time", "sample"),
            self.residuals.detach().cpu().numpy() * np.float32(time_unit),
            {"long_name": "residual max_j |ds_j/dt|", "units": "1/r"},
        )
        variables["end_time"] = (
            (),
            time[-1],
            {"long_name": "end of the phase", "units": TIME_UNITS},
        )
        variables["steps"] = ((), np.int32(self.stats.steps), {"long_name": "solver steps"})
        variables["nfe"] = ((), np.int32(self.stats.nfe), {"long_name": "field evaluations"})
        variables["converged"] = ((), np.bool_(self.stats.converged), {"long_name": "converged"})
        since = {
            "long_name": "time since phase start",
            "units": TIME_UNITS,
            "description": "in units of the neuron time constant r",
        }
        coords = {
            "time": ("time", time, since),
            "sample": ("sample", sample.astype(np.int32), {"long_name": "sample id"}),
        }
        if labels is not None:
            label = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
            coords["label"] = ("sample", label.astype(np.int32), {"long_name": "class label"})
        if phase is not None:
            coords["phase"] = phase
        return xr.Dataset(variables, coords=coords)


class FixedGrid:
    """A fixed-grid torchdiffeq method ("euler", "rk4", …): steps of exactly ``dt``, the state
    projected onto the rate function's bounds before every step (``Field.callback_step``).

    The residual of a chunk is the projected motion of its last step,
    max_j |s_j(t) - s_j(t - dt)| / dt, which costs no extra field evaluation (for Euler it is
    exactly the projected field at t - dt).
    """

    adaptive = False
    ode = True

    def __init__(self, name: str) -> None:
        self.name = name
        # projected Euler evaluates the field only at projected states
        self.evaluates_in_bounds = name == "euler"

    def advance(self, field, state, t0, k, dt, *, step, rtol, atol) -> tuple[Tensor, Tensor]:
        """Integrate ``k`` steps of size ``dt`` from ``t0``: (projected state, residual (B,))."""
        grid = torch.linspace(t0, t0 + k * dt, k + 1, dtype=torch.float64)
        points = grid[[0, -2, -1]] if k >= 2 else grid
        options = {"grid_constructor": lambda func, y0, t: grid}
        sol = odeint(field, state, points, method=self.name, options=options)
        new, prev = field.project_(sol[-1]), field.project_(sol[-2])
        return new, (new - prev).abs_().amax(1) / dt


class Adaptive:
    """An adaptive torchdiffeq method ("dopri5", …) with ``rtol``/``atol`` and first step
    ``step``; projected at the end of every chunk, whose residual is the projected field
    there (``Field.residual``)."""

    adaptive = True
    ode = True
    evaluates_in_bounds = False

    def __init__(self, name: str) -> None:
        self.name = name

    def advance(self, field, state, t0, k, dt, *, step, rtol, atol) -> tuple[Tensor, Tensor]:
        span = torch.linspace(t0, t0 + k * dt, k + 1, dtype=torch.float64)[[0, -1]]
        options = {"first_step": step}
        sol = odeint(field, state, span, method=self.name, rtol=rtol, atol=atol, options=options)
        new = field.project_(sol[-1])
        return new, field.residual(new)


class Steady:
    """The steady state of Eq. 13 by exact population updates in the loop's order (block
    Gauss-Seidel), not by integrating time.

    One sweep sets every population, h1 first and the output last, to its steady state given the
    others (``field.block_state``: s = clip(r I) for a hidden population, the nudged output's
    s = clip(r (I + beta d) / (1 + r beta))). In a feed-forward chain with one loop-back into
    h1 every population but h1 is then at its fixed point, so the residual of the whole network
    — the projected max_j |ds_j/dt| that the ODE stop uses — is h1's, computed from the current
    that starts the next sweep (one loop-back product). Sweeps continue until every sample's
    residual is below ``tol`` or ``max_sweeps`` are done; the phase duration does not apply.

    The sweeps are a fixed-point iteration around the loop: they converge when the loop's gain
    is below one, as in the bundled networks (docs/performance.md); a loop strong enough to make
    them oscillate ends at ``max_sweeps`` with ``converged`` False and its residual in the stats.
    Needs a rate function that is the identity within its bounds (the hard sigmoid), every
    backward projection ending in the first population and no self-projection
    (:meth:`check_network`), and a nudge with 1 + r beta > 0 on every output neuron
    (:func:`check_nudge`): with beta <= -1/r the nudge cancels or reverses the leak, the output
    has no interior fixed point and runs to a bound, and which bound can depend on the path —
    the loop can then settle elsewhere than the ODE does. (Sending such outputs to their
    bounds was measured to learn worse than nudging with a positive sign only:
    docs/results.md.)
    """

    adaptive = False
    ode = False
    evaluates_in_bounds = True
    name = "steady"

    @staticmethod
    def check_network(net) -> None:
        """Refuse a network whose steady state this method cannot find (one-line ConfigError)."""
        fn = net.neuron.fn
        if not fn.identity_within_bounds:
            raise ConfigError(
                f"solver 'steady' needs a rate function that is the identity within its bounds "
                f"(hard_sigmoid): rate {fn.name!r} has no closed-form population update; use an "
                f"ODE method ({', '.join(ode_methods())})"
            )
        for e in net.edges:
            if e.src >= 0 and (e.src == e.dst or (e.src > e.dst and e.dst != 0)):
                raise ConfigError(
                    f"solver 'steady' needs every backward projection to end in the first "
                    f"population and no self-projection; projection {e.name!r} runs "
                    f"{e.src} -> {e.dst}"
                )

    def solve(self, field, state: Tensor, *, tol: float, max_sweeps: int):
        """Sweep from ``state`` (not modified; projected first): (new state, residual (B,),
        sweeps, converged)."""
        net, pops = field.net, field.net.populations
        check_nudge(net, field.beta)
        # one contiguous tensor per population (the matrix products read them faster than
        # column slices of the flat state); joined again at the end
        s = [field.project_(state[:, cols].clone()) for cols in pops]
        sweeps, last = 0, len(pops) - 1
        if field.target is not None:
            # the nudge changes the output's equation alone: set the output first, so that a
            # phase started from a free fixed point does not begin by recomputing h1 ... h_L
            cur = current(net, s, last, field.input_current)
            field.passes += recurrent_edges(net, last)
            block_state(net, last, cur, field.beta, field.target, out=s[last])
        while True:
            for k in range(len(pops)):
                # within the bounds rho(s) = s, so the state is the rate
                cur = current(net, s, k, field.input_current)
                field.passes += recurrent_edges(net, k)
                # the residual where it decides something: every sweep with a tolerance, else
                # after the last one
                if k == 0 and sweeps > 0 and (tol > 0 or sweeps >= max_sweeps):
                    res = block_residual(net, 0, cur, s[0], field.beta, field.target)
                    converged = tol > 0 and bool((res < tol).all())
                    if converged or sweeps >= max_sweeps:
                        return torch.cat(s, 1), res, sweeps, converged
                block_state(net, k, cur, field.beta, field.target, out=s[k])
            sweeps += 1
            field.nfe += 1


SOLVERS: Registry[FixedGrid | Adaptive | Steady] = Registry(
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


# the most steps one solver call takes: torchdiffeq walks its grid in Python over
# ``grid.unbind()``, which makes one tensor object per point up front in one C call (2e7 steps:
# gigabytes, and a SIGINT or SIGTERM that waits for it). Longer phases go in chunks of this many.
MAX_CHUNK = 1000


def step_count(duration: float, step: float) -> int:
    """Steps of a phase of ``duration``: the step is shortened to fit a whole number of them."""
    return max(1, math.ceil(duration / step - 1e-9)) if duration > 0 else 0


def relax(
    field,
    s0: Tensor,
    duration: float,
    *,
    method: str = "euler",
    step: float = 0.5,
    tol: float = 0.0,
    check_every: int = 5,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    record_every: int | None = None,
    max_sweeps: int = 3,
) -> Relaxation:
    """Integrate ``field`` from ``s0`` over ``[0, duration]`` (or, for ``method="steady"``,
    sweep to its steady state).

    Args:
        field: callable f(t, s) -> ds/dt with ``project_``, ``callback_step``, ``residual`` and an
            ``nfe`` counter (see ``ctsp.continuous.Field``).
        s0: initial state (B, N); not modified.
        duration: phase length in time units (the cap when ``tol`` is set).
        method: solver name (see :data:`SOLVERS`).
        step: step size eps for fixed-grid methods (first step for adaptive ones).
        tol: steady-state tolerance on max_j |ds_j/dt| per sample; 0 disables the early stop.
        check_every: steps between residual checks when ``tol`` > 0.
        record_every: record the state every this many steps (None: no trajectory).
        max_sweeps: the sweep cap of "steady" (which ignores duration, step, check_every,
            rtol and atol).
    """
    solver = SOLVERS[method]
    if isinstance(solver, Steady):
        if record_every is not None:
            raise ConfigError(
                "solver 'steady' records no trajectory: record with an ODE method (the run's "
                "recorder integrates the recorded samples with euler, see analysis.recording)"
            )
        if max_sweeps < 1:
            raise ConfigError(f"solver 'steady' needs max_sweeps >= 1; got {max_sweeps}")
        solver.check_network(field.net)
        field.in_bounds = True
        state, last, sweeps, converged = solver.solve(field, s0, tol=tol, max_sweeps=max_sweeps)
        stats = RelaxStats(sweeps, field.nfe, 0.0, converged, float(last.max()), field.passes)
        return Relaxation(state, stats)
    if duration < 0 or step <= 0:
        raise ConfigError(f"solver needs duration >= 0 and step > 0; got {duration}, {step}")
    n_steps = step_count(duration, step)
    dt = duration / n_steps if n_steps else step
    if record_every is not None:
        chunk = record_every
    elif tol > 0:
        chunk = check_every
    else:
        chunk = max(n_steps, 1)
    chunk = min(chunk, MAX_CHUNK)

    # projected Euler evaluates the field only at projected states (callback_step)
    field.in_bounds = solver.evaluates_in_bounds and field.bounds is not None
    state = field.project_(s0.clone())
    record = record_every is not None
    last = field.residual(state) if record or n_steps == 0 else None
    times, traj, res = [0.0], [state.clone()], [last]
    done, converged = 0, False
    while done < n_steps:
        k = min(chunk, n_steps - done)
        state, last = solver.advance(
            field, state, done * dt, k, dt, step=step, rtol=rtol, atol=atol
        )
        done += k
        if record:
            times.append(done * dt)
            traj.append(state.clone())
            res.append(last)
        if tol > 0 and bool((last < tol).all()):
            converged = True
            break
    final = last
    stats = RelaxStats(
        steps=done,
        nfe=field.nfe,
        time=done * dt,
        converged=converged,
        residual=float(final.max()) if final.numel() else 0.0,
        passes=field.passes,
    )
    if not record:
        return Relaxation(state, stats)
    times = torch.tensor(times, dtype=torch.float64)
    return Relaxation(state, stats, times, torch.stack(traj), torch.stack(res))
