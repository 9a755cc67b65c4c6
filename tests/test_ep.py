"""Equilibrium Propagation's layered networks (issue 29): feedback projections, EP's symmetric
rule and the steady solver's alternate-layer sweeps, against independent float64 references
written here from the equations."""

import numpy as np
import pytest
import torch

from ctsp import config as cfg
from ctsp.continuous import Field, RelaxSpec, Trainer, relax
from ctsp.continuous.solvers import sweep_groups
from ctsp.errors import ConfigError
from models import LayeredNetwork

SIZES = [12, 9, 7, 5]  # input, two hidden populations, output
EPS, FREE, CLAMPED, BETA, LR = 0.5, 20, 4, 0.7, [0.3, 0.2, 0.1]
VARIANTS = {"symmetric": "ep", "random": "chl"}  # feedback -> its rule (the bundled pairs)
# Glorot weights x GAIN in the fixed-point test: at x 1 the energy of some of its networks has
# two minima reachable from rest, and the sweeps (larger moves) settle in the lower one
GAIN = 0.8


def _config(feedback: str, rule: str) -> cfg.RunConfig:
    spec = {
        "network": {"sizes": SIZES, "loop": "none", "feedback": feedback},
        "solver": {"method": "euler", "step": EPS, "free_duration": FREE * EPS,
                   "clamped_duration": CLAMPED * EPS},
        "train": {"rule": rule, "beta": BETA, "beta_sign": "positive", "lr": LR,
                  "batch_size": 6},
    }  # fmt: skip
    return cfg.from_dict(spec, cfg.RunConfig)


def _network(feedback: str, seed: int = 0) -> LayeredNetwork:
    """A float64 network with positive biases (so that not every state sits on a bound)."""
    torch.manual_seed(seed)
    net = LayeredNetwork(SIZES, loop="none", feedback=feedback).double()
    with torch.no_grad():
        for b in net.biases:
            b.uniform_(0.0, 0.3)
    return net


def _numpy(net: LayeredNetwork) -> dict[str, np.ndarray]:
    """Every weight (n_out, n_in) and bias of ``net`` as float64 arrays."""
    arrays = {e.name: net.projections[e.name].weight.detach().numpy().copy() for e in net.edges}
    arrays |= {f"b{k}": b.detach().numpy().copy() for k, b in enumerate(net.biases)}
    return arrays


def _relax(p: dict, x: np.ndarray, s: list[np.ndarray], steps: int, beta: float, d):
    """Projected Euler of Eq. 13 with feedback (hard sigmoid; inside [0, 1] rho(s) = s and
    rho'(s) = 1), every population from the same state at each step."""
    n = len(s)
    for _ in range(steps):
        ds = []
        for k in range(n):
            i = (p["input"] @ x.T).T if k == 0 else s[k - 1] @ p[f"ff{k}"].T
            if k + 1 < n:
                i = i + s[k + 1] @ p[f"fb{k + 1}"].T
            ds.append(i + p[f"b{k}"] - s[k] - (beta * (s[k] - d) if k == n - 1 else 0.0))
        s = [np.clip(sk + EPS * dk, 0.0, 1.0) for sk, dk in zip(s, ds, strict=True)]
    return s


def _reference_step(p: dict, x: np.ndarray, d: np.ndarray, rule: str) -> dict[str, np.ndarray]:
    """One EP training step written from the equations: free phase from 0, clamped phase from
    the free fixed point, then the rule's update of every weight and bias; the updates."""
    zeros = [np.zeros((x.shape[0], n)) for n in SIZES[1:]]
    free = _relax(p, x, zeros, FREE, 0.0, d)
    nudged = _relax(p, x, free, CLAMPED, BETA, d)
    scale = [lr / (BETA * x.shape[0]) for lr in LR]
    updates = {"input": scale[0] * (nudged[0] - free[0]).T @ x}
    for k in range(len(SIZES) - 1):
        updates[f"b{k}"] = scale[k] * (nudged[k] - free[k]).sum(0)
    for k in range(1, len(SIZES) - 1):
        if rule == "ep":  # symmetric: rho_j^b rho_i^b - rho_j^0 rho_i^0
            dw = nudged[k].T @ nudged[k - 1] - free[k].T @ free[k - 1]
        else:  # Eq. 14, one-sided: (rho_j^b - rho_j^0) rho_i^0
            dw = (nudged[k] - free[k]).T @ free[k - 1]
        updates[f"ff{k}"] = scale[k] * dw
    return updates


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("feedback", list(VARIANTS))
def test_one_training_step_equals_a_float64_reference(feedback, backend):
    """Free phase, clamped phase and the update of every weight and bias with per-layer
    learning rates, through the Trainer, against :func:`_reference_step`: symmetric feedback
    with EP's symmetric rule, random feedback with Eq. 14 (the feedback fixed)."""
    rule = VARIANTS[feedback]
    config = cfg.with_overrides(_config(feedback, rule), [(["train", "chl_backend"], backend)])
    net = _network(feedback)
    before = _numpy(net)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(6, SIZES[0], generator=gen, dtype=torch.float64)
    y = torch.randint(0, SIZES[-1], (6,), generator=gen)
    Trainer(net, config, torch.device("cpu"), 6).learn(x, y, torch.arange(6), 1.0)
    after = _numpy(net)
    d = torch.nn.functional.one_hot(y, SIZES[-1]).double().numpy()
    expected = _reference_step(before, x.numpy(), d, rule)
    assert max(np.abs(u).max() for u in expected.values()) > 1e-3  # the step changes weights
    for name in before:
        change = after[name] - before[name]
        if name.startswith("fb"):  # tied: the forward change, transposed; random: none
            want = expected[f"ff{name[2:]}"].T if feedback == "symmetric" else 0 * change
        else:
            want = expected[name]
        np.testing.assert_allclose(change, want, rtol=1e-5, atol=1e-12, err_msg=name)


def _energy(net: LayeredNetwork, cur: torch.Tensor, beta: float, d, s: torch.Tensor):
    """The Hopfield energy of a symmetric layered network at ``s`` (inside [0, 1]) per sample:
    sum s^2 / (2 r) - b.s - s_1.(W_in x) - sum_k s_{k+1}.W_k s_k + beta/2 |s_out - d|^2."""
    pops = [s[:, c] for c in net.populations]
    tau = [net.tau[c] for c in net.populations]
    e = sum((p**2 / (2 * t)).sum(1) for p, t in zip(pops, tau, strict=True))
    e = (
        e
        - (pops[0] * cur).sum(1)
        - sum((p * b).sum(1) for p, b in zip(pops[1:], net.biases[1:], strict=True))
    )
    for k in range(1, len(pops)):
        e = e - ((pops[k] @ net.projections[f"ff{k}"].weight) * pops[k - 1]).sum(1)
    return e + beta / 2 * ((pops[-1] - d) ** 2).sum(1)


@pytest.mark.parametrize("hidden", [1, 2, 3])
@pytest.mark.parametrize("beta", [0.0, 0.8])
def test_steady_sweeps_lower_the_energy_and_reach_the_long_euler_fixed_point(hidden, beta):
    """A symmetric network of 1-3 hidden layers (random tau, biases, weights x GAIN): from a
    random state every sweep of alternate layers lowers the Hopfield energy (each population
    update is its exact minimiser); from rest, where the trainer starts, the swept fixed point
    equals a projected-Euler relaxation run to a residual of 1e-11. (The energy of a symmetric
    network can have several minima: from a random start the two may settle in different ones.)"""
    torch.manual_seed(hidden)
    sizes = [10, *[int(n) for n in torch.randint(5, 12, (hidden,))], 4]
    net = LayeredNetwork(sizes, loop="none", feedback="symmetric").double()
    with torch.no_grad():
        for e in net.edges:
            if e.kind != "feedback":
                net.projections[e.name].weight.mul_(GAIN)
        for b in net.biases:
            b.uniform_(-0.2, 0.4)
        net.tau.uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(hidden)
    x = torch.rand(5, sizes[0], generator=gen, dtype=torch.float64)
    d = torch.nn.functional.one_hot(torch.randint(0, sizes[-1], (5,), generator=gen), sizes[-1])
    d = d.double() if beta else None
    cur, s0 = net.input_current(x), torch.rand(5, net.n_state, generator=gen, dtype=torch.float64)
    field = Field(net, cur, beta, d)
    energies = [_energy(net, cur, beta, 0 if d is None else d, s0)]
    for sweeps in range(1, 13):
        state = relax(field, s0, RelaxSpec("steady", 0.0, max_sweeps=sweeps)).state
        energies.append(_energy(net, cur, beta, 0 if d is None else d, state))
    drops = -torch.stack(energies).diff(dim=0)
    assert (drops >= -1e-12).all() and (drops.sum(0) > 1e-3).all(), drops
    rest = torch.zeros_like(s0)
    swept = relax(field, rest, RelaxSpec("steady", 0.0, tol=1e-10, max_sweeps=2000))
    assert swept.stats.converged
    ode = relax(field, rest, RelaxSpec("euler", 4000.0, step=0.4, tol=1e-11, check_every=100))
    assert ode.stats.converged
    torch.testing.assert_close(swept.state, ode.state, rtol=0, atol=1e-8)


def test_the_sweep_order_follows_the_projections():
    """Sigprop's loop network: in order; EP's: alternate layers; a loop-back between two
    layers of the same parity beside feedback is refused in one line."""
    assert sweep_groups(LayeredNetwork([4, 3, 3, 2])) == ((0,), (1,), (2,))
    ep = LayeredNetwork([4, 3, 3, 3, 2], loop="none", feedback="random")
    assert sweep_groups(ep) == ((0, 2), (1, 3))
    assert sweep_groups(LayeredNetwork([4, 3, 3, 3, 2], feedback="symmetric")) == ((0, 2), (1, 3))
    with pytest.raises(ConfigError, match="projection 'loop' joins populations 2 and 0"):
        sweep_groups(LayeredNetwork([4, 3, 3, 2], feedback="symmetric"))


def test_tied_feedback_is_the_forward_weight_stored_once():
    net = LayeredNetwork([4, 3, 2], loop="none", feedback="symmetric")
    assert net.projections["fb1"].weight.data_ptr() == net.projections["ff1"].weight.data_ptr()
    assert sorted(net.state_dict()) == ["biases.0", "biases.1", "projections.ff1.weight",
                                        "projections.input.weight", "tau"]  # fmt: skip
    torch.manual_seed(0)
    plain = LayeredNetwork([4, 3, 2], loop="none")
    torch.manual_seed(0)
    fed = LayeredNetwork([4, 3, 2], loop="none", feedback="random")
    for name, w in plain.state_dict().items():  # feedback is drawn after the others
        torch.testing.assert_close(fed.state_dict()[name], w, rtol=0, atol=0)


def test_feedback_angles_against_the_cosine_formula():
    """fb_k ∠ ff_k^T from arccos of the cosine of the flat matrices; 0 for tied feedback."""
    from analysis.alignment import alignment_angles, feedback_angles

    torch.manual_seed(3)
    net = LayeredNetwork([6, 5, 4, 3], loop="fixed", feedback="random")
    names, angles = feedback_angles(net)
    assert names == ["fb1", "fb2"]
    for name, angle in zip(names, angles, strict=True):
        a = net.projections[name].weight.double().flatten()
        b = net.projections["ff" + name[2:]].weight.double().T.flatten()
        cos = float(a @ b / (a.norm() * b.norm()))
        assert angle == pytest.approx(np.degrees(np.arccos(cos)), abs=1e-9)
    assert alignment_angles(net)[0] == ["ff1", "ff2", "loop", "fb1", "fb2"]
    tied = LayeredNetwork([6, 5, 4, 3], loop="none", feedback="symmetric")
    np.testing.assert_allclose(feedback_angles(tied)[1], 0.0, atol=1e-6)


def test_ep_runs_record_their_alignment_and_trajectories(tmp_path):
    """`ctsp simulate ep-fa-digits` with the alignment and trajectory recorders: fb1 ∠ ff1ᵀ
    every 20 minibatches (feedback alignment: the forward weights turn towards the fixed
    feedback, the angle falls from about 90 degrees), and the relaxations of 2 test images with
    EP's populations."""
    import xarray as xr

    from ctsp.cli import main

    argv = ["simulate", "ep-fa-digits", "--epochs", "2", "--record", "2", "--no-progress"]
    argv += ["--set", "record.alignment_every=20", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    ds = xr.load_dataset(tmp_path / "run" / "alignment.nc")
    assert list(ds.weight.values) == ["fb1"] and list(ds.label.values) == ["fb1∠ff1ᵀ"]
    assert ds.sizes["step"] == 2 * -(-1438 // 20) // 20  # minibatches of 20, every 20th
    angle = ds.angle.sel(weight="fb1").values  # from about 90 degrees (random), aligning
    assert 80 < angle[-1] < angle[0] < 100 and (np.diff(angle) < 0).all(), angle
    trajectories = xr.load_dataset(tmp_path / "run" / "trajectories.nc")
    assert {"h1", "out"} <= set(trajectories.data_vars)


def test_with_one_hidden_layer_a_fixed_loop_back_is_random_feedback():
    """In a network with one hidden layer sigprop's fixed loop-back and EP's random feedback
    are the same projection (out -> h1, fixed, drawn after the others): the two train alike,
    bit for bit (ct-baselines-digits shows it over whole runs)."""
    nets, configs = {}, {}
    for name, network in {
        "loop": {"loop": "fixed"},
        "fa": {"loop": "none", "feedback": "random"},
    }.items():
        spec = {"network": {"sizes": [12, 9, 5], **network}, "train": {"lr": [0.2, 0.1]}}
        configs[name] = cfg.from_dict(spec, cfg.RunConfig)
        torch.manual_seed(0)
        nets[name] = LayeredNetwork([12, 9, 5], **network)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(6, 12, generator=gen), torch.randint(0, 5, (6,), generator=gen)
    for name, net in nets.items():
        Trainer(net, configs[name], torch.device("cpu"), 6).learn(x, y, torch.arange(6), 1.0)
    loop, fa = nets["loop"].projections, nets["fa"].projections
    assert torch.equal(loop["loop"].weight, fa["fb1"].weight)
    assert all(torch.equal(loop[k].weight, fa[k].weight) for k in ("input", "ff1"))
    biases = zip(nets["loop"].biases, nets["fa"].biases, strict=True)
    assert all(torch.equal(a, b) for a, b in biases) and nets["fa"].biases[0].abs().sum() > 0


def test_init_gain_scales_the_weights_between_populations():
    """network.init_gain multiplies the initial weights of forward, loop-back and random
    feedback projections (tied feedback follows); the input projection and the draws stay."""
    nets = {}
    for gain in (1.0, 0.5):
        torch.manual_seed(0)
        nets[gain] = LayeredNetwork([6, 5, 4, 3], loop="fixed", feedback="random", init_gain=gain)
    for e in nets[1.0].edges:
        ratio = 1.0 if e.kind == "input" else 0.5
        a, b = (nets[g].projections[e.name].weight for g in (1.0, 0.5))
        torch.testing.assert_close(b, a * ratio, rtol=0, atol=0, msg=e.name)
    torch.manual_seed(0)
    tied = LayeredNetwork([6, 5, 4, 3], loop="none", feedback="symmetric", init_gain=0.5)
    assert torch.equal(tied.projections["fb2"].weight, tied.projections["ff2"].weight.T)
