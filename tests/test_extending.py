"""The seams: a new learning rule (discrete or continuous-time), a new solver and a new spiking
neuron model are one class plus one registration, and the configuration, the error messages and
the runs pick them up."""

import pytest
import torch

from ctsp import config as cfg
from ctsp import continuous
from ctsp import data as datasets
from ctsp.app import build_layered_network, simulate, train
from ctsp.discrete import RULES, ClassifierCE, Rules
from ctsp.errors import ConfigError
from ctsp.spiking import NEURON_MODELS, SpikingNeuron
from models import build_discrete_network

QUIET = {"progress": False, "log": lambda line: None}


class OutputOnly(Rules):
    """A toy rule: only the classification layer learns (CE), the others stay random."""

    def __init__(self, net, config) -> None:
        super().__init__()
        self.net = net
        self.rules["out"] = ClassifierCE(net.layers[-1].parameters(), lr=config.train.lr)

    def train_batch(self, x, y):
        with torch.no_grad():
            h = x
            for layer in self.net.layers[:-1]:
                h, _ = layer(h)
        loss, z = self.rules["out"].update(self.net.layers[-1](h)[0], None, y)
        return loss[None], (z.argmax(1) != y).sum()[None]

    def predict_exits(self, x):
        return self.net(x).argmax(1)[:, None]


class LIFNeuron(SpikingNeuron):
    """Leaky integrate-and-fire: v_pre = decay v + I, spike, hard reset to 0."""

    decay = 0.5

    def step(self, v, current):
        v_pre = current if v is None else self.decay * v + current
        spike = self.spike(v_pre - self.threshold)
        return spike, v_pre * (1 - spike), v_pre


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture
def registered():
    RULES.register("output-only", OutputOnly)
    NEURON_MODELS.register("lif", LIFNeuron)
    yield
    RULES.unregister("output-only")
    NEURON_MODELS.unregister("lif")


def test_unregistered_names_are_refused_with_the_list():
    with pytest.raises(ConfigError, match=r"train\.rule: 'output-only'.*valid: sigprop, bp"):
        cfg.from_dict({"train": {"rule": "output-only"}}, cfg.DiscreteRunConfig)
    with pytest.raises(ConfigError, match=r"model\.neuron: 'lif'; valid: if"):
        cfg.from_dict({"model": {"neuron": "lif"}}, cfg.DiscreteRunConfig)


def test_a_registered_rule_trains(registered, tmp_path, digits):
    train_section = {"rule": "output-only", "epochs": 2, "lr": 0.005}
    config = cfg.from_dict({"train": train_section}, cfg.DiscreteRunConfig)
    net = build_discrete_network(config, digits.image_shape, digits.classes)
    before = [p.detach().clone() for p in net.layers.parameters()]
    result = train(config, tmp_path / "run", network=net, data=digits, **QUIET)
    assert result.network is net and list(result.metrics.layer.values) == ["out"]
    assert result.metrics.test_error.values[-1] < 0.5
    hidden = [p for layer in net.layers[:-1] for p in layer.parameters()]
    kept = {id(p) for p in hidden}
    for p, p0 in zip(net.layers.parameters(), before, strict=True):
        assert torch.equal(p, p0) == (id(p) in kept)  # only the classification layer moved


def test_a_registered_neuron_model_runs_in_a_spiking_network(registered, tmp_path, digits):
    neuron = LIFNeuron(1.0, surrogate=False)
    spikes, voltages = neuron.run(torch.tensor([[0.6], [0.6], [0.6]]))
    # v_pre: 0.6 -> 0.5*0.6 + 0.6 = 0.9 -> 0.5*0.9 + 0.6 = 1.05 (spike)
    torch.testing.assert_close(voltages[:, 0], torch.tensor([0.6, 0.9, 1.05]))
    assert spikes[:, 0].tolist() == [0.0, 0.0, 1.0]
    model = {"arch": "snn", "neuron": "lif", "channels": [4, 4], "hidden": [16], "kernel": 3}
    config = cfg.from_dict(
        {"model": {**model, "pool": 2}, "train": {"epochs": 1, "batch_size": 64}},
        cfg.DiscreteRunConfig,
    )
    result = train(config, tmp_path / "snn", data=digits, **QUIET)
    models = {type(m) for m in result.network.modules() if isinstance(m, SpikingNeuron)}
    assert models == {LIFNeuron}
    assert bool(result.metrics.train_loss.notnull().all())


class OutputOnlyCHL(continuous.ContrastiveHebbian):
    """A toy continuous-time rule: Eq. 14 for the projections into the output alone."""

    def update(self, net, x, phases, lr, batch, reduce):
        out = len(net.populations) - 1
        only = {e.name: (lr[e.name] if e.dst == out else 0.0) for e in net.edges}
        super().update(net, x, phases, only, batch, reduce)


class HandEuler(continuous.TimeStepping):
    """A toy time-stepping solver: projected Euler written out, s <- clip(s + dt f(s))."""

    def advance(self, field, state, t0, k, dt, spec):
        for _ in range(k):
            prev, state = state, field.field.project_(state + dt * field(t0, state))
        return state, (state - prev).abs().amax(1) / dt


@pytest.fixture
def continuous_registered():
    continuous.RULES.register("output-chl", OutputOnlyCHL)
    continuous.SOLVERS.register("hand-euler", HandEuler("hand-euler"))
    yield
    continuous.RULES.unregister("output-chl")
    continuous.SOLVERS.unregister("hand-euler")


def test_a_registered_solver_and_continuous_rule_run(continuous_registered, tmp_path, digits):
    """The recipe of docs/architecture.md: the toy solver relaxes as torchdiffeq's Euler does,
    and `ctsp simulate` with both trains the output projection alone."""
    from models import LayeredNetwork

    torch.manual_seed(0)
    net = LayeredNetwork([64, 32, 10]).double()
    field = continuous.Field(net, net.input_current(torch.rand(3, 64, dtype=torch.float64)))
    spec = continuous.RelaxSpec("hand-euler", 3.0, step=0.25)
    ours = continuous.relax(field, net.zero_state(3), spec)
    theirs = continuous.relax(field, net.zero_state(3), spec.but(method="euler"))
    torch.testing.assert_close(ours.state, theirs.state, rtol=0, atol=1e-12)
    assert (ours.stats.steps, ours.stats.nfe) == (12, 12)
    config = cfg.from_dict(
        {"solver": {"method": "hand-euler"}, "train": {"rule": "output-chl", "epochs": 2}}
    )
    result = simulate(config, tmp_path / "run", data=digits, **QUIET)
    before = build_layered_network(config)
    out = len(before.populations) - 1
    for e in result.network.edges:  # 64-256-10: ff1 projects into the output
        moved = not torch.equal(result.network.projections[e.name].weight,
                                before.projections[e.name].weight)  # fmt: skip
        assert moved == (e.dst == out), e.name
    assert result.metrics.test_error.values[-1] < 0.5
    with pytest.raises(ConfigError, match=r"train\.rule: 'nope'; valid: chl, ep, output-chl"):
        cfg.from_dict({"train": {"rule": "nope"}})
