"""Spiking sigprop (paper Sec. VI, Table V): the IF neuron, the arctan surrogate, locality of the
SP variants, the voltage variant without surrogate, learning on digits, precision, `ctsp train`."""

import math

import pytest
import torch
import xarray as xr

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import train
from ctsp.cli import main
from ctsp.config import make_learner
from ctsp.discrete import DiscreteTrainer
from ctsp.errors import ConfigError
from ctsp.spiking import (
    ArctanSurrogate,
    IFNeuron,
    SpikingBackprop,
    SpikingShallow,
    SpikingSigprop,
    arctan_spike,
    if_step,
    repeat_in_time,
)
from models import build_discrete_network as build_network
from models.discrete import count_parameters
from models.spiking import SpikingNetwork

DIGITS = (1, 8, 8)
CPU = torch.device("cpu")
QUIET = {"progress": False, "log": lambda s: None}
TINY = {"arch": "snn", "channels": [4, 8], "hidden": [32], "kernel": 3, "pool": 2}
VARIANTS = {  # Table V's four columns: (train.rule, model.spike_loss)
    "bp": ("bp", "surrogate"),
    "shallow": ("shallow", "surrogate"),
    "sp-surrogate": ("sigprop", "surrogate"),
    "sp-voltage": ("sigprop", "voltage"),
}


def scfg(variant="sp-surrogate", signal=None, model=None, **train):
    rule, spike_loss = VARIANTS[variant]
    sections = {
        "model": {**TINY, "spike_loss": spike_loss, **(model or {})},
        "signal": {"into": "input", **(signal or {})},
        "train": {"rule": rule, "batch_size": 64, **train},
    }
    return cfg.from_dict(sections, cfg.DiscreteRunConfig)


def trainer_for(config):
    net = build_network(config, DIGITS, 10)
    return net, DiscreteTrainer(net, make_learner(net, config), config, CPU)


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


# --- the neuron ----------------------------------------------------------------------------------


def test_if_neuron_integrates_fires_and_resets_without_leak():
    """v_pre = v + I; spike when v_pre reaches the threshold; then v = 0 (hard reset: the excess
    is lost); without a spike v keeps its value (no leak), negative values included."""
    currents = [0.25, 0.25, 0.25, 0.25, 0.5, 0.0, 0.0, -0.25, 0.75, 2.0, 0.0]
    cases = {
        1.0: (
            [0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0],
            [0.25, 0.5, 0.75, 1.0, 0.5, 0.5, 0.5, 0.25, 1.0, 2.0, 0.0],
        ),
        0.5: (
            [0, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0],
            [0.25, 0.5, 0.25, 0.5, 0.5, 0.0, 0.0, -0.25, 0.5, 2.0, 0.0],
        ),
    }
    for theta, (spikes, v_pre) in cases.items():
        v, seen = torch.zeros(1), []
        for current in currents:  # the pure step function, state passed explicitly
            spike, v, pre = if_step(v, torch.tensor([current]), theta)
            seen.append((spike.item(), pre.item(), v.item()))
        assert [s for s, _, _ in seen] == spikes, theta
        assert [p for _, p, _ in seen] == v_pre, theta
        assert [v for _, _, v in seen] == [p * (1 - s) for s, p in zip(spikes, v_pre, strict=True)]
        # the module: T steps of (T, N) currents from v = 0, one neuron per column
        s, pre = IFNeuron(theta).run(torch.tensor(currents)[:, None].repeat(1, 2))
        assert s.shape == pre.shape == (len(currents), 2)
        assert s[:, 0].tolist() == spikes and pre[:, 1].tolist() == v_pre


def test_arctan_surrogate_forward_is_heaviside_and_backward_the_formula():
    x = (torch.arange(-20, 21) / 10).requires_grad_()  # x[20] = 0 exactly
    upstream = torch.linspace(0.5, 1.5, 41)
    s = arctan_spike(x)
    assert torch.equal(s, (x >= 0).float()) and s[20] == 1  # H(0) = 1
    (s * upstream).sum().backward()
    expected = upstream / (1 + (math.pi * x.detach()) ** 2)
    torch.testing.assert_close(x.grad, expected)
    # ... which is the derivative of g(x) = arctan(pi x) / pi + 1/2
    z = x.detach().clone().requires_grad_()
    ((torch.atan(math.pi * z) / math.pi + 0.5) * upstream).sum().backward()
    torch.testing.assert_close(x.grad, z.grad)
    # without the surrogate the spike carries no gradient
    v = torch.zeros(3)
    current = torch.tensor([0.2, 0.6, 1.0], requires_grad=True)
    spike, _, v_pre = if_step(v, current, 0.5, surrogate=False)
    assert spike.tolist() == [0, 1, 1] and spike.grad_fn is None and v_pre.grad_fn is not None
    spike, _, _ = if_step(v, current, 0.5, surrogate=True)
    (grad,) = torch.autograd.grad(spike.sum(), current)
    torch.testing.assert_close(grad, 1 / (1 + (math.pi * (current.detach() - 0.5)) ** 2))


def test_input_and_target_have_separate_membrane_states():
    """A layer gives the input path the same spikes with or without targets (batch norm from
    the inputs only, separate states); a train constant in time has its current computed once,
    with the result of the full (T, N, ...) train."""
    torch.manual_seed(0)
    net = build_network(scfg(), DIGITS, 10).eval()
    layer = net.layers[0]
    x = repeat_in_time(torch.rand(6, *DIGITS), 4)
    t = repeat_in_time(torch.rand(10, *DIGITS) * 5, 4)
    alone, both = layer(x), layer(x, t, voltage=True)
    assert both.h.shape == (4, 6, 4, 4, 4) and both.t.shape == (4, 10, 4, 4, 4)
    assert torch.equal(alone.h, both.h) and alone.t is None
    full = layer(x.contiguous(), t.contiguous(), voltage=True)
    torch.testing.assert_close(full.h_voltage, both.h_voltage)
    torch.testing.assert_close(full.t_voltage, both.t_voltage)
    assert torch.equal(full.h, both.h) and torch.equal(full.t, both.t)
    # the pooled voltage crosses the threshold exactly where the pooled spikes are 1
    assert torch.equal(both.h, (both.h_voltage >= layer.neuron.threshold).float())


# --- the variants ------------------------------------------------------------------------------

LOCALITY_CASES = [
    ("sp-surrogate", {"into": "input"}),
    ("sp-voltage", {"into": "input"}),
    ("sp-surrogate", {"into": "hidden", "generator": "target-input"}),
    ("sp-voltage", {"into": "sparse", "generator": "target-loop"}),
]


@pytest.mark.parametrize("variant, signal", LOCALITY_CASES)
def test_no_gradient_crosses_a_layer_in_the_sp_variants(variant, signal):
    """Back-propagating layer i's loss reaches layer i's parameters (and the generator's, for
    layer 1) and no other parameter; BP-surrogate's loss reaches every layer."""
    torch.manual_seed(0)
    config = scfg(variant, signal)
    net, trainer = trainer_for(config)
    assert isinstance(net, SpikingNetwork) and isinstance(trainer.learner, SpikingSigprop)
    assert trainer.names == net.names == ("conv1", "conv2", "fc1", "out")
    x, y = torch.rand(12, *DIGITS), torch.arange(12) % 10
    pairs = list(net.pairs(x))
    assert all(h.dtype == torch.float32 for h, _ in pairs)
    for i, (h, t) in enumerate(pairs):
        net.zero_grad(set_to_none=True)
        list(trainer.learner.rules.values())[i].loss(h, t, y)[0].backward()
        for j, layer in enumerate(net.layers):
            grads = [p.grad for p in layer.parameters()]
            if j == i:
                assert any(g is not None and g.abs().sum() > 0 for g in grads), (i, j)
            else:
                assert all(g is None for g in grads), (i, j)
        gen_grads = [p.grad for p in net.signal.parameters()]
        assert all(g is None for g in gen_grads) != (i == 0), i
    bp_net, bp = trainer_for(scfg("bp"))
    bp.learner.rules["out"].loss(bp_net(x), None, y)[0].backward()
    for layer in bp_net.layers:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())


def test_voltage_variant_uses_no_surrogate_anywhere(monkeypatch, digits):
    def boom(ctx, x):
        raise AssertionError("the arctan surrogate was used")

    monkeypatch.setattr(ArctanSurrogate, "forward", staticmethod(boom))
    torch.manual_seed(0)
    net, trainer = trainer_for(scfg("sp-voltage"))
    assert all(not m.surrogate for m in net.modules() if isinstance(m, IFNeuron))
    x, y = digits.train_x[:64], digits.train_y[:64]
    losses, _ = trainer.learner.train_batch(x, y)
    assert losses.shape == (4,) and bool(torch.isfinite(losses).all())
    assert len(trainer.evaluate(digits.test_x[:50], digits.test_y[:50])) == 4
    _, surrogate = trainer_for(scfg("sp-surrogate"))
    with pytest.raises(AssertionError, match="surrogate was used"):
        surrogate.learner.train_batch(x, y)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_reduces_the_loss_on_digits(variant, digits):
    """Seeded, a few epochs of a small network: every exit's training loss falls, and the
    network's prediction beats chance (90 % error) on the test set."""
    config = scfg(variant, model={"channels": [8, 16], "hidden": [64]}, lr=3e-3, epochs=4)
    _, trainer = trainer_for(config)
    learner = {"bp": SpikingBackprop, "shallow": SpikingShallow}.get(variant, SpikingSigprop)
    assert type(trainer.learner) is learner
    losses = []
    for epoch in range(config.train.epochs):
        trainer.set_epoch(epoch)
        losses.append(trainer.train_epoch(digits, epoch)["loss"])
    first, last = torch.tensor(losses[0]), torch.tensor(losses[-1])
    assert (last < first - 0.03).all(), losses
    test_error = trainer.evaluate(digits.test_x, digits.test_y)[-1]
    assert test_error < 0.8, test_error


def test_shallow_trains_only_the_classifier(digits):
    torch.manual_seed(0)
    net, trainer = trainer_for(scfg("shallow"))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer.learner.train_batch(digits.train_x[:64], digits.train_y[:64])
    for k, v in net.state_dict().items():
        changed = not torch.equal(v, before[k])
        assert changed == (k.startswith("layers.3.") or "running" in k or "num_batches" in k), k


# --- precision ---------------------------------------------------------------------------------


def test_bfloat16_on_cpu_and_float16_refused(digits):
    seen = []
    for variant in ("sp-voltage", "bp"):
        torch.manual_seed(0)
        net, trainer = trainer_for(scfg(variant, precision="bfloat16"))
        handle = net.layers[1].synapse.projection.register_forward_hook(
            lambda mod, args, out: seen.append(out.dtype)
        )
        with trainer.autocast():
            losses, wrong = trainer.learner.train_batch(digits.train_x[:64], digits.train_y[:64])
        with trainer.autocast():
            pairs = list(net.pairs(digits.test_x[:8]))
        handle.remove()
        assert bool(torch.isfinite(losses).all()) and losses.dtype == torch.float32
        assert [h.dtype for h, _ in pairs] == [torch.float32] * 4
        assert len(trainer.evaluate(digits.test_x[:40], digits.test_y[:40])) == len(losses)
    assert seen and set(seen) == {torch.bfloat16}
    with pytest.raises(ConfigError, match='"float16" needs device = "cuda"'):
        build_network(scfg(precision="float16"), DIGITS, 10)


def test_gradient_scalers_step_every_layer_and_are_checkpointed(monkeypatch, digits):
    """float16 runs give every optimizer a GradScaler (CUDA); the same code path with a CPU
    scaler: the scaled backward steps each layer, and the scales go into the learner state."""
    monkeypatch.setattr(
        "ctsp.spiking.learners.grad_scaler",
        lambda precision: torch.amp.GradScaler("cpu", init_scale=2.0**8),
    )
    for variant in ("sp-surrogate", "bp"):
        torch.manual_seed(0)
        net, trainer = trainer_for(scfg(variant))
        before = [p.detach().clone() for p in net.layers.parameters()]
        losses, _ = trainer.learner.train_batch(digits.train_x[:64], digits.train_y[:64])
        assert bool(torch.isfinite(losses).all())
        after = list(net.layers.parameters())
        assert all(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
        state = trainer.learner.state_dict()
        scales = [r["scaler"]["scale"] for r in state["rules"].values()]
        assert len(scales) == len(trainer.names) and all(s == 2.0**8 for s in scales)
        trainer.learner.load_state_dict(state)


# --- configs, runs and the command line --------------------------------------------------------


def test_bundled_snn_configs_have_the_paper_settings():
    names = [f"snn-fmnist-{v}" for v in VARIANTS]
    assert set(names) <= set(cfg.bundled_names(cfg.DiscreteRunConfig))
    for name in names:
        c = cfg.load(name, cfg.DiscreteRunConfig)
        rule, spike_loss = VARIANTS[name.removeprefix("snn-fmnist-")]
        assert (c.train.rule, c.model.spike_loss) == (rule, spike_loss)
        assert (c.model.arch, c.model.channels, c.model.hidden) == ("snn", (128, 128), (2048,))
        assert (c.model.time_steps, c.model.kernel, c.model.pool) == (4, 3, 2)
        assert (c.train.lr, c.train.schedule, c.train.t_max) == (5e-4, "cosine", 64)
        assert (c.train.epochs, c.train.batch_size, c.data.name) == (64, 128, "fashion-mnist")
    torch.manual_seed(0)
    net = build_network(cfg.load("snn-fmnist-bp", cfg.DiscreteRunConfig), (1, 28, 28), 10)
    assert net.names == ("conv1", "conv2", "fc1", "out")
    assert count_parameters(net.layers) == 1152 + 256 + 147456 + 256 + 6272 * 2048 + 2048 + 20490
    thresholds = {m.threshold for m in net.modules() if isinstance(m, IFNeuron)}
    assert thresholds == {1.0}
    sp = build_network(scfg("sp-voltage"), DIGITS, 10)
    assert {(m.threshold, m.surrogate) for m in sp.modules() if isinstance(m, IFNeuron)} == {
        (0.5, False)
    }


def test_resume_gives_the_same_weights(tmp_path):
    config = scfg("sp-surrogate", epochs=2)
    full = train(config, tmp_path / "full", **QUIET)
    train(config, tmp_path / "part", stop_after=1, **QUIET)
    resumed = train(config, tmp_path / "part", resume=True, **QUIET)
    a = torch.load(full.path / "checkpoint.pt", weights_only=False)
    b = torch.load(resumed.path / "checkpoint.pt", weights_only=False)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert all("scaler" not in r for r in a["learner"]["rules"].values())  # float32: none


def test_ctsp_train_snn_run_directory(capsys, tmp_path):
    out = tmp_path / "run"
    narrow = ["--set", "model.channels=[4,4]", "--set", "model.hidden=[16]"]
    argv = ["train", "snn-fmnist-sp-voltage", "--dataset", "digits", "--set", "data.validation=200",
            "--batch-size", "64"]  # fmt: skip
    code = main([*argv, *narrow, "--epochs", "2", "--out", str(out), "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0 and "epoch   2/2" in stdout and "exits: conv1 " in stdout
    assert {"config.toml", "metrics.nc", "checkpoint.pt", "best.pt"} <= {
        p.name for p in out.iterdir()
    }
    m = xr.open_dataset(out / "metrics.nc", engine="scipy")
    assert list(m.layer.values) == ["conv1", "conv2", "fc1", "out"]
    assert m.test_exit_error.shape == (2, 4)
    assert m.lr.values[1] == pytest.approx(5e-4 * (1 + math.cos(math.pi / 64)) / 2)
    saved = cfg.load(out / "config.toml", cfg.DiscreteRunConfig)
    assert saved.model.channels == (4, 4) and saved.model.spike_loss == "voltage"
    code = main(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"])
    assert code == 0 and "epoch   3/3" in capsys.readouterr().out
    code = main([*argv, *narrow, "--set", "train.precision=float16", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ctsp: error: ") and err.count("\n") == 1
    assert '"float16" needs device = "cuda"' in err and not (tmp_path / "x").exists()
