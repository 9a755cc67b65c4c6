"""Eq. 13 vector field against a hand-computed example; solvers against scipy's solve_ivp."""

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from ctsp.continuous import SOLVERS, Field, RelaxSpec, Status, eq13, ode_methods, relax
from ctsp.errors import ConfigError
from ctsp.nn import RATE_FUNCTIONS, Conv2d, Linear, rate_function
from models import LayeredNetwork


def tiny_net(rate="hard_sigmoid", loop="learned"):
    """Input 2 -> h 2 -> out 2, loop out -> h, with hand-set weights."""
    net = LayeredNetwork([2, 2, 2], loop=loop, rate=rate).double()
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    with torch.no_grad():
        net.projections["input"].weight.copy_(t([[1.0, -1.0], [0.5, 2.0]]))
        net.projections["ff1"].weight.copy_(t([[2.0, 0.0], [-1.0, 1.0]]))
        if loop != "none":
            net.projections["loop"].weight.copy_(t([[0.5, 0.0], [0.0, -1.0]]))
        net.biases[0].copy_(t([0.1, 0.0]))
        net.biases[1].copy_(t([0.0, -0.2]))
    return net


def test_eq13_hand_computed():
    net = tiny_net()
    x = torch.tensor([[0.2, 0.4]], dtype=torch.float64)
    s = torch.tensor(
        [[0.5, 1.5, 0.3, -0.2]], dtype=torch.float64
    )  # h = (0.5, 1.5), o = (0.3, -0.2)
    d = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    # by hand: rho(h) = (0.5, 1), rho(o) = (0.3, 0); rho'(h) = (1, 0); rho'(o) = (1, 0)
    # input current: W_in x + b1 = (0.2 - 0.4 + 0.1, 0.1 + 0.8) = (-0.1, 0.9)
    # h current: (-0.1 + 0.5*0.3, 0.9 - 1*0) = (0.05, 0.9); ds_h = (1*0.05 - 0.5, 0*0.9 - 1.5)
    # o current: (2*0.5 + 0, -0.5 + 1 - 0.2) = (1.0, 0.3);
    # ds_o = (1*1.0 - 0.3, 0*0.3 + 0.2) - beta (o - d) with beta = 0.5: -(0.15, -0.6)
    expected = torch.tensor([[0.05 - 0.5, -1.5, 0.7 - 0.15, 0.2 + 0.6]], dtype=torch.float64)
    got = eq13(net, s, net.input_current(x), 0.5, d)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # beta = 0: no nudging; the target is ignored
    free = eq13(net, s, net.input_current(x), 0.0, d)
    torch.testing.assert_close(free[:, 2:], torch.tensor([[0.7, 0.2]], dtype=torch.float64))


def test_nudging_only_on_output_and_per_sample_beta():
    net = tiny_net()
    x = torch.rand(3, 2, dtype=torch.float64)
    s = torch.rand(3, 4, dtype=torch.float64)
    d = torch.eye(2, dtype=torch.float64)[[0, 1, 0]]
    cur = net.input_current(x)
    f0 = eq13(net, s, cur)
    beta = torch.tensor([[0.5], [-0.5], [1.0]], dtype=torch.float64)
    fb = eq13(net, s, cur, beta, d)
    torch.testing.assert_close(fb[:, :2], f0[:, :2])
    torch.testing.assert_close(fb[:, 2:], f0[:, 2:] - beta * (s[:, 2:] - d))


def test_loop_none_removes_feedback():
    a, b = tiny_net(loop="learned"), tiny_net(loop="none")
    s = torch.rand(4, 4, dtype=torch.float64)
    x = torch.rand(4, 2, dtype=torch.float64)
    diff = eq13(a, s, a.input_current(x)) - eq13(b, s, b.input_current(x))
    loop = a.projections["loop"](a.neuron.rho(s[:, 2:])) * a.neuron.rho_prime(s[:, :2])
    torch.testing.assert_close(diff[:, :2], loop)
    assert float(diff[:, 2:].abs().max()) == 0.0


def _scipy_reference(net, x, s0, beta, d, t_end, times):
    cur = net.input_current(x)

    def f(t, y):
        s = torch.from_numpy(y).reshape(s0.shape)
        return eq13(net, s, cur, beta, d).reshape(-1).numpy()

    sol = solve_ivp(
        f, (0, t_end), s0.reshape(-1).numpy(), t_eval=times, rtol=1e-10, atol=1e-12, method="DOP853"
    )
    return sol.y.T.reshape(len(times), *s0.shape)


# the order of accuracy of every fixed-grid method: a new one must be added here
ORDER = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}


def _sigmoid_relaxation(method: str, step: float, rtol: float = 1e-6):
    torch.manual_seed(0)
    net = LayeredNetwork([5, 4, 3, 2], rate="sigmoid").double()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 1.0)
    x = torch.rand(3, 5, dtype=torch.float64)
    s0 = torch.randn(3, net.n_state, dtype=torch.float64)
    d = torch.eye(2, dtype=torch.float64)[[0, 1, 1]]
    field = Field(net, net.input_current(x), 0.7, d)
    every = 5 if SOLVERS[method].adaptive else int(round(0.5 / step))
    spec = RelaxSpec(method, 4.0, step=step, rtol=rtol, atol=rtol / 100, record_every=every)
    out = relax(field, s0, spec)
    ref = _scipy_reference(net, x, s0, 0.7, d, 4.0, out.times.numpy())
    np.testing.assert_array_equal(out.state.numpy(), out.trajectory[-1].numpy())
    return np.abs(out.trajectory.numpy() - ref).max()


@pytest.mark.parametrize("method", ode_methods())
def test_every_solver_agrees_with_solve_ivp(method):
    """A small sigmoid loop network (smooth field, no bounds), integrated by every solver the
    registry accepts: the trajectory on a grid agrees with scipy's DOP853 at rtol 1e-10.
    Adaptive methods (rtol 1e-6) within 1e-4; fixed-grid methods within 0.6 step^order, and
    halving the step shrinks the error by at least 0.7 * 2^order (their order of accuracy)."""
    if SOLVERS[method].adaptive:
        err = _sigmoid_relaxation(method, 0.1)
        assert err < 1e-4, f"{method}: max abs deviation {err:.2e} from solve_ivp"
        return
    order = ORDER[method]
    coarse, fine = _sigmoid_relaxation(method, 0.02), _sigmoid_relaxation(method, 0.01)
    assert fine < 0.6 * 0.01**order, f"{method}: max abs deviation {fine:.2e} from solve_ivp"
    assert coarse / fine > 0.7 * 2**order, f"{method}: error ratio {coarse / fine:.2f}"


def test_projected_euler_matches_hand_loop_and_stays_in_bounds():
    torch.manual_seed(1)
    net = LayeredNetwork([6, 5, 4], rate="hard_sigmoid").double()
    x = torch.rand(2, 6, dtype=torch.float64) * 3
    field = Field(net, net.input_current(x))
    out = relax(field, net.zero_state(2), RelaxSpec("euler", 3.0, step=0.25))
    s = net.zero_state(2)
    for _ in range(12):
        prev, s = s, (s + 0.25 * eq13(net, s, net.input_current(x))).clamp(0, 1)
    torch.testing.assert_close(out.state, s, rtol=0, atol=1e-12)
    assert out.stats.steps == 12 and out.stats.nfe == 12  # the residual costs no evaluation
    # the residual: projected motion of the last step = projected field at its start
    assert out.stats.residual == pytest.approx(float(((s - prev).abs() / 0.25).max()), abs=1e-12)
    assert out.stats.residual == pytest.approx(
        float(Field(net, net.input_current(x)).residual(prev).max()), abs=1e-12
    )
    assert float(out.state.min()) >= 0 and float(out.state.max()) <= 1


def test_a_long_phase_goes_to_torchdiffeq_in_chunks_with_the_same_result(monkeypatch):
    """At most MAX_CHUNK steps per torchdiffeq call (it makes one tensor object per grid point
    up front): 12 steps in chunks of 5, 5 and 2 are the 12 steps of the hand loop."""
    from ctsp.continuous import solvers

    calls = []
    advance = solvers.FixedGrid.advance

    def counted(self, field, state, t0, k, dt, spec):
        calls.append(k)
        return advance(self, field, state, t0, k, dt, spec)

    monkeypatch.setattr(solvers, "MAX_CHUNK", 5)
    monkeypatch.setattr(solvers.FixedGrid, "advance", counted)
    torch.manual_seed(1)
    net = LayeredNetwork([6, 5, 4], rate="hard_sigmoid").double()
    x = torch.rand(2, 6, dtype=torch.float64) * 3
    out = relax(
        Field(net, net.input_current(x)), net.zero_state(2), RelaxSpec(duration=3.0, step=0.25)
    )
    s = net.zero_state(2)
    for _ in range(12):
        s = (s + 0.25 * eq13(net, s, net.input_current(x))).clamp(0, 1)
    assert calls == [5, 5, 2] and out.stats.steps == 12
    torch.testing.assert_close(out.state, s, rtol=0, atol=1e-12)


def test_steady_state_stop_and_stats():
    torch.manual_seed(2)
    net = LayeredNetwork([6, 8, 3])
    x = torch.rand(4, 6)
    fixed = relax(Field(net, net.input_current(x)), net.zero_state(4), RelaxSpec(duration=40.0))
    spec = RelaxSpec(duration=40.0, tol=1e-4, check_every=2)
    early = relax(Field(net, net.input_current(x)), net.zero_state(4), spec)
    assert early.stats.converged and early.stats.residual < 1e-4
    assert early.stats.steps < fixed.stats.steps == 80
    torch.testing.assert_close(early.state, fixed.state, atol=1e-3, rtol=0)
    assert not fixed.stats.converged  # no tolerance set: never reported as converged


def test_trajectory_last_point_is_final_state():
    net = LayeredNetwork([6, 8, 3])
    x = torch.rand(2, 6)
    spec = RelaxSpec(duration=5.0, record_every=3)
    out = relax(Field(net, net.input_current(x)), net.zero_state(2), spec)
    assert out.trajectory.shape[1:] == (2, net.n_state)
    assert float(out.times[-1]) == pytest.approx(5.0)
    torch.testing.assert_close(out.trajectory[-1], out.state, rtol=0, atol=0)
    assert out.residuals.shape == (len(out.times), 2)


def test_unknown_names_are_rejected_with_the_list():
    with pytest.raises(ConfigError, match=r"invalid value for solver.method: 'foo'; valid: euler"):
        RelaxSpec("foo", 1.0)
    with pytest.raises(ConfigError, match="unknown rate function 'tanh'"):
        rate_function("tanh")
    assert "dopri5" in SOLVERS and set(RATE_FUNCTIONS) == {"hard_sigmoid", "sigmoid"}


def test_rate_functions():
    s = torch.tensor([-0.5, 0.0, 0.3, 1.0, 1.5])
    hs = rate_function("hard_sigmoid")
    torch.testing.assert_close(hs.rho(s), torch.tensor([0.0, 0.0, 0.3, 1.0, 1.0]))
    torch.testing.assert_close(hs.rho_prime(s), torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))
    sg = rate_function("sigmoid")
    s = torch.linspace(-3, 3, 7, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(sg.rho(s).sum(), s)
    torch.testing.assert_close(sg.rho_prime(s.detach()), g)


def test_projections_and_glorot_init():
    torch.manual_seed(0)
    lin = Linear(300, 200)
    bound = (6 / 500) ** 0.5
    assert lin.weight.shape == (200, 300) and float(lin.weight.abs().max()) <= bound
    assert float(lin.weight.abs().max()) > 0.95 * bound
    r = torch.rand(3, 300)
    torch.testing.assert_close(lin(r), r @ lin.weight.T)
    conv = Conv2d(2, 4, 3, padding=1)
    img = torch.rand(1, 2, 5, 5)
    torch.testing.assert_close(conv(img), torch.nn.functional.conv2d(img, conv.weight, padding=1))
    net = LayeredNetwork([4, 3, 2])
    assert all(float(b.abs().max()) == 0 for b in net.biases)


@pytest.mark.parametrize("method", ["euler", "dopri5", "steady"])
def test_every_method_ends_with_a_status_and_leaves_the_field_as_it_was(method):
    """One protocol: a solve returns its counts in the stats (the Field is immutable, so a
    second solve of the same field counts the same), and a status: the limit it ran to, or
    converged, or non-finite where the state holds NaN."""
    torch.manual_seed(3)
    rate = "sigmoid" if SOLVERS[method].adaptive else "hard_sigmoid"  # smooth for dopri5
    net = LayeredNetwork([6, 5, 4], rate=rate).double()
    field = Field(net, net.input_current(torch.rand(2, 6, dtype=torch.float64)))
    limit = Status.SWEEP_LIMIT if method == "steady" else Status.STEP_LIMIT
    spec = RelaxSpec(method, 2.0, step=0.25, max_sweeps=2)
    first, second = (relax(field, net.zero_state(2), spec) for _ in range(2))
    assert first.stats == second.stats and first.stats.status is limit
    assert not first.stats.converged and first.stats.nfe > 0
    with pytest.raises(AttributeError):
        field.beta = 1.0  # frozen
    converged = relax(field, net.zero_state(2), spec.but(duration=200.0, tol=1e-3, max_sweeps=200))
    assert converged.stats.status is Status.CONVERGED and converged.stats.converged
    nan = Field(net, torch.full((2, 5), float("nan"), dtype=torch.float64))
    assert relax(nan, net.zero_state(2), spec).stats.status is Status.NONFINITE
