"""The "steady" solver: the fixed points of Eq. 13 by layer sweeps, against long ODE relaxations
(projected Euler to a residual of 1e-9, and scipy's solve_ivp for a small net)."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ctsp import config as cfg
from ctsp.app import build_layered_network
from ctsp.continuous import (
    Field,
    RelaxSpec,
    Trainer,
    block_state,
    current,
    eq13,
    relax,
)
from ctsp.errors import ConfigError
from models import LayeredNetwork


def random_net(hidden: int, loop: str, seed: int, gain: float = 1.0) -> LayeredNetwork:
    """A float64 loop network with ``hidden`` hidden populations, random per-neuron tau in
    [0.5, 1.5], positive biases (so that not every state sits on a bound) and Glorot weights
    scaled by ``gain``."""
    torch.manual_seed(seed)
    sizes = [12] + [int(n) for n in torch.randint(6, 16, (hidden,))] + [5]
    net = LayeredNetwork(sizes, loop=loop).double()
    with torch.no_grad():
        for proj in net.projections.values():
            proj.weight.mul_(gain)
        for b in net.biases:
            b.uniform_(0.0, 0.3)
        net.tau.uniform_(0.5, 1.5)
    return net


def phase(net, beta, seed: int = 0, batch: int = 6):
    """A phase's field arguments: input current, beta, one-hot targets (None when beta = 0)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, net.sizes[0], generator=gen, dtype=torch.float64)
    y = torch.randint(0, net.sizes[-1], (batch,), generator=gen)
    target = torch.nn.functional.one_hot(y, net.sizes[-1]).double()
    no_nudge = isinstance(beta, float) and beta == 0.0
    return net.input_current(x), beta, None if no_nudge else target


def long_euler(net, cur, beta, target, s0):
    """Projected Euler (step 0.4 < 2 min r: stable) until every sample's residual is below 1e-11."""
    spec = RelaxSpec("euler", 2000.0, step=0.4, tol=1e-11, check_every=100)
    out = relax(Field(net, cur, beta, target), s0, spec)
    assert out.stats.converged, f"the reference did not converge: {out.stats.residual:.1e}"
    return out.state


def steady(net, cur, beta, target, s0, **kw):
    kw.setdefault("tol", 1e-10)
    kw.setdefault("max_sweeps", 400)
    return relax(Field(net, cur, beta, target), s0, RelaxSpec("steady", 0.0, **kw))


SYMMETRIC = torch.tensor([[0.4], [0.4], [0.4], [-0.4], [-0.4], [-0.4]], dtype=torch.float64)


@pytest.mark.parametrize(
    "hidden", [1, pytest.param(2, marks=pytest.mark.slow), pytest.param(3, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("loop", ["learned", "fixed", "none"])
@pytest.mark.parametrize("beta", [0.0, 0.7, -0.4, "symmetric"])
def test_steady_state_equals_long_euler(hidden, loop, beta):
    """Random loop networks of depth 1-3 with every loop mode, random tau, free phase and both
    nudge signs (and a per-sample ±beta, as symmetric nudging uses): the swept state equals
    the end of a projected-Euler relaxation run to a residual of 1e-11 from where the trainer
    starts the phase (free: zeros; nudged: the free fixed point), and from a random start.
    (A loop of hard sigmoids can have several stable fixed points; from a random start the
    sweeps and the ODE may settle in different ones, so there the check is that the swept
    state is a fixed point of the ODE: Euler started from it does not move.)"""
    net = random_net(hidden, loop, seed=hidden * 10 + len(loop))
    b = SYMMETRIC if beta == "symmetric" else beta
    cur, b, target = phase(net, b, seed=hidden)
    start = net.zero_state(6)
    if target is not None:  # a clamped phase starts from the free fixed point, as in training
        start = steady(net, cur, 0.0, None, start).state
    random = torch.rand(6, net.n_state, dtype=torch.float64)
    for name, s0 in (("phase start", start), ("random", random)):
        out = steady(net, cur, b, target, s0)
        assert out.stats.converged and out.stats.residual < 1e-10
        ref = long_euler(net, cur, b, target, s0 if name == "phase start" else out.state)
        assert 0.0 < float(ref.max()) and float(ref.min()) >= 0.0  # not every state on a bound
        torch.testing.assert_close(out.state, ref, atol=1e-8, rtol=0)
        # the reported residual is the projected field of Eq. 13 at the returned state
        f = Field(net, cur, b, target).residual(out.state)
        assert float(f.max()) == pytest.approx(out.stats.residual, abs=1e-12)
    if loop == "none":  # feed-forward: one sweep is exact, the check sweep confirms it
        assert out.stats.steps == 1


def test_steady_state_equals_solve_ivp_on_interior_fixed_point():
    """A small net whose fixed point lies inside (0, 1) everywhere (no projection involved):
    scipy's DOP853 integration of Eq. 13 to t = 60 ends at the swept fixed point."""
    torch.manual_seed(3)
    net = LayeredNetwork([4, 5, 3], loop="learned").double()
    with torch.no_grad():
        for proj in net.projections.values():
            proj.weight.mul_(0.2)
        for b in net.biases:
            b.fill_(0.4)
    cur, beta, target = phase(net, 0.5, seed=1, batch=3)
    s0 = net.zero_state(3)

    def f(t, y):
        s = torch.from_numpy(y).reshape(s0.shape)
        return eq13(net, s, cur, beta, target).reshape(-1).numpy()

    sol = solve_ivp(f, (0, 60.0), s0.reshape(-1).numpy(), rtol=1e-11, atol=1e-13, method="DOP853")
    ref = sol.y[:, -1].reshape(s0.shape)
    assert 0.05 < ref.min() and ref.max() < 0.95  # interior: the smooth ODE is exact here
    out = steady(net, cur, beta, target, s0)
    np.testing.assert_allclose(out.state.numpy(), ref, atol=1e-9)


def test_block_state_is_the_closed_form():
    """Eq. 13 at the block fixed point is zero (interior) or pushes outward (on a bound)."""
    net = random_net(2, "learned", seed=5, gain=3.0)
    cur, beta, target = phase(net, 0.8)
    state = torch.rand(6, net.n_state, dtype=torch.float64)
    for k, cols in enumerate(net.populations):
        state[:, cols] = block_state(net, k, current(net, state, k, cur), beta, target)
        f = eq13(net, state, cur, beta, target)[:, cols]
        s = state[:, cols]
        inside = (s > 0) & (s < 1)
        assert float(f[inside].abs().max()) < 1e-12
        assert bool((f[s == 0] <= 0).all()) and bool((f[s == 1] >= 0).all())
        # the output formula with tau: s = clip(r (I + beta d) / (1 + r beta))
    r = net.tau[net.output]
    i_out = current(net, state, len(net.populations) - 1, cur)
    expected = (r * (i_out + beta * target) / (1 + r * beta)).clamp(0, 1)
    torch.testing.assert_close(state[:, net.output], expected)


def test_a_loop_too_strong_for_sweeps_is_reported_not_converged():
    """Sweeps are a fixed-point iteration around the loop: with a loop gain above one (weights
    x2) they oscillate where the ODE settles; the stats say so (not converged, the residual)."""
    net = random_net(2, "learned", seed=0, gain=2.0)
    cur, beta, target = phase(net, 0.0)
    s0 = net.zero_state(6)
    long_euler(net, cur, beta, target, s0)  # the ODE has a stable fixed point
    out = steady(net, cur, beta, target, s0, max_sweeps=60)
    assert not out.stats.converged and out.stats.residual > 1e-3 and out.stats.steps == 60


def test_stats_count_sweeps_and_matrix_passes():
    """A sweep computes each recurrent projection once; the residual check adds the loop-back.
    Euler counts one product per recurrent projection and field evaluation."""
    net = random_net(2, "learned", seed=1)  # recurrent projections: ff1, ff2, loop
    cur, beta, target = phase(net, 0.0)
    out = steady(net, cur, beta, target, net.zero_state(6), tol=0.0, max_sweeps=5)
    assert (out.stats.steps, out.stats.nfe, out.stats.passes) == (5, 5, 5 * 3 + 1)
    assert not out.stats.converged and out.stats.time == 0.0
    euler = relax(Field(net, cur), net.zero_state(6), RelaxSpec("euler", 3.0, step=0.5))
    assert euler.stats.passes == euler.stats.nfe * 3


@pytest.mark.parametrize("feedback", ["none", "symmetric"])
@pytest.mark.parametrize("beta, tol, cap", [(0.0, 1e-6, 400), (0.7, 1e-6, 400), (0.0, 1e-12, 7)])
def test_reading_the_tolerance_test_a_sweep_late_changes_nothing(feedback, beta, tol, cap):
    """On a GPU the steady solver reads each sweep's tolerance test at the next sweep (no wait
    for the device inside a relaxation). Forced here on the CPU: the same states and stats as
    reading it at once, for a loop network and an EP network, converged or at the cap."""
    from ctsp.continuous.solvers import Steady

    net = random_net(2, "learned" if feedback == "none" else "none", seed=4)
    if feedback != "none":
        torch.manual_seed(4)
        net = LayeredNetwork(net.sizes, loop="none", feedback=feedback).double()
    cur, beta, target = phase(net, beta)
    field, s0 = Field(net, cur, beta, target), net.zero_state(6)
    spec = RelaxSpec("steady", 0.0, tol=tol, max_sweeps=cap)
    now, late = (Steady(lag=lag).solve(field, s0, spec) for lag in (False, True))
    assert torch.equal(now.state, late.state) and now.stats == late.stats
    assert now.stats.converged == (cap == 400) and now.stats.steps > 2


def test_refusals_name_the_problem():
    """Rate functions without a closed-form update (in relax and in the config), nudges without
    an interior fixed point (1 + r beta <= 0, in relax and in the config), trajectory recording
    and a zero sweep cap are refused in one line."""
    sig = LayeredNetwork([4, 5, 3], rate="sigmoid")
    x = torch.rand(2, 4)
    with pytest.raises(ConfigError, match="rate 'sigmoid' has no closed-form.*euler"):
        relax(Field(sig, sig.input_current(x)), sig.zero_state(2), RelaxSpec("steady", 0.0))
    with pytest.raises(ConfigError, match="network.rate 'sigmoid' has no closed-form.*euler"):
        cfg.with_overrides(
            cfg.RunConfig(), [(["solver", "method"], "steady"), (["network", "rate"], "sigmoid")]
        )
    net = LayeredNetwork([4, 5, 3])
    cur = net.input_current(x)
    with pytest.raises(ConfigError, match=r"1 \+ r beta <= 0.*no steady state"):
        field = Field(net, cur, -1.0, torch.eye(3)[[0, 1]])
        relax(field, net.zero_state(2), RelaxSpec("steady", 0.0))
    steady_cfg = [(["solver", "method"], "steady"), (["train", "beta"], 1.0)]
    for extra in ([(["train", "beta_sign"], "random")], [(["train", "symmetric"], True)]):
        with pytest.raises(ConfigError, match=r"train.beta = 1 .*1 \+ r beta <= 0"):
            cfg.with_overrides(cfg.RunConfig(), steady_cfg + extra)
    positive = [(["train", "beta_sign"], "positive")]
    assert cfg.with_overrides(cfg.RunConfig(), steady_cfg + positive).train.beta == 1.0
    with pytest.raises(ConfigError, match="records no trajectory"):
        RelaxSpec("steady", 1.0, record_every=1)
    with pytest.raises(ConfigError, match="max_sweeps >= 1"):
        RelaxSpec("steady", 1.0, max_sweeps=0)


def test_training_step_with_steady_equals_converged_euler():
    """One CHL update (free phase, clamped phase, Eq. 14) with "steady" equals the update with a
    projected-Euler relaxation converged to 1e-10, within float64 rounding."""
    base = cfg.with_overrides(
        cfg.RunConfig(),
        [
            (["network", "sizes"], (12, 9, 7, 5)),
            (["train", "lr"], (0.1, 0.05, 0.02)),
            (["train", "beta"], 0.5),
            (["train", "chl_backend"], "torch"),
        ],
    )
    euler = cfg.with_overrides(
        base,
        [
            (["solver", "step"], 0.1),
            (["solver", "tol"], 1e-10),
            (["solver", "check_every"], 50),
            (["solver", "free_duration"], 2000.0),
            (["solver", "clamped_duration"], 2000.0),
        ],
    )
    swept = cfg.with_overrides(
        base, [(["solver", "method"], "steady"), (["solver", "tol"], 1e-12),
               (["solver", "max_sweeps"], 500)]
    )  # fmt: skip
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(8, 12, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (8,), generator=gen)
    nets = []
    for config in (euler, swept):
        net = LayeredNetwork(config.network.sizes, loop="learned").double()
        torch.manual_seed(11)
        with torch.no_grad():
            for p in net.parameters():
                p.uniform_(-0.5, 0.5)
        trainer = Trainer(net, config, torch.device("cpu"), 8)
        for sign in (1.0, -1.0):
            _, free, clamped = trainer.learn(x, y, torch.arange(8), sign)
            assert free.converged and clamped.converged
        nets.append(net)
    for (name, a), b in zip(
        nets[0].state_dict().items(), nets[1].state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=0, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["default", *cfg.bundled_names()])
def test_every_bundled_config_trains_with_steady(name):
    """`--solver steady` on every bundled continuous config (and the default) passes the
    config's checks and trains minibatches of its network, the phases converging (random
    inputs of the dataset's shape: MNIST is not on these machines)."""
    base = cfg.RunConfig() if name == "default" else cfg.load(name)
    config = cfg.with_overrides(base, [(["solver", "method"], "steady")])
    net = build_layered_network(config)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(config.train.batch_size, config.network.sizes[0], generator=gen)
    y = torch.randint(0, config.network.sizes[-1], (x.shape[0],), generator=gen)
    trainer = Trainer(net, config, torch.device("cpu"), x.shape[0])
    for _ in range(2):
        _, free, clamped = trainer.learn(x, y, torch.arange(x.shape[0]), 1.0)
    assert free.steps >= 1 and clamped.steps >= 1
    if config.solver.tol > 0:
        assert free.converged and clamped.converged
