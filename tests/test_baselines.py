"""Learning-rule baselines (ctsp.discrete): FA, DFA, LL, BP, Shallow on the shared layers."""

import copy

import pytest
import torch
import xarray as xr
from torch.nn import functional as F

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import train
from ctsp.cli import main
from ctsp.config import make_learner
from ctsp.discrete import (
    DiscreteTrainer,
    FeedbackAlignmentFunction,
    LocalLearning,
    similarity,
)
from ctsp.errors import DivergenceError
from models import build_discrete_network as build_network

DIGITS = (1, 8, 8)
CPU = torch.device("cpu")
QUIET = {"progress": False, "log": lambda s: None}
RULES = ("bp", "fa", "dfa", "ll-bp", "ll-fa", "shallow")


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def dcfg(rule: str, arch: str = "fc", **model):
    model = {"arch": arch, "hidden": [32, 32] if arch == "fc" else [32], **model}
    if arch == "conv":
        model.setdefault("channels", [8, 16])
    return cfg.from_dict({"model": model, "train": {"rule": rule}}, cfg.DiscreteRunConfig)


def learner_for(rule: str, arch: str = "fc", **model):
    config = dcfg(rule, arch, **model)
    net = build_network(config, DIGITS, 10)
    return net, make_learner(net, config)


def batch(digits, n=32):
    return digits.train_x[:n], digits.train_y[:n]


# --- feedback alignment ------------------------------------------------------------------------


@pytest.mark.parametrize("conv", [False, True])
def test_fa_function_sends_the_error_through_b(conv):
    """Forward as the layer; dL/dx as if the weights were B; dL/dW and dL/db as usual."""
    torch.manual_seed(0)
    shapes = ((2, 3, 5, 5), (4, 3, 3, 3), (4,)) if conv else ((6, 5), (3, 5), (3,))
    x, w, b = (torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes)
    fb = torch.randn(shapes[1], dtype=torch.float64)
    pad = 1 if conv else None

    def op(x, w, b):
        return F.conv2d(x, w, b, padding=1) if conv else F.linear(x, w, b)

    y = FeedbackAlignmentFunction.apply(x, w, b, fb, pad)
    torch.testing.assert_close(y, op(x, w, b))
    g = torch.randn_like(y)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), g)
    torch.testing.assert_close(gx, torch.autograd.grad(op(x, fb, b), x, g)[0])
    for mine, usual in zip((gw, gb), torch.autograd.grad(op(x, w, b), (w, b), g), strict=True):
        torch.testing.assert_close(mine, usual)
    if not conv:  # the dense case by hand: g B, g^T x, sum of g
        torch.testing.assert_close(gx, g @ fb)
        torch.testing.assert_close(gw, g.T @ x)


@pytest.mark.parametrize("arch", ["fc", "conv"])
def test_fa_feedback_is_fixed_and_its_updates_differ_from_bp(digits, arch):
    x, y = batch(digits)
    bp_net, bp = learner_for("bp", arch)
    fa_net, fa = learner_for("fa", arch)
    for p, q in zip(bp_net.parameters(), fa_net.parameters(), strict=True):
        assert torch.equal(p, q)  # same seed, same initial weights
    assert list(fa.fixed) == list(fa_net.names)  # keyed by layer
    fixed = [b.clone() for b in fa.fixed.values()]
    assert [b.shape for b in fixed] == [layer.projection.weight.shape for layer in fa_net.layers]
    bp.train_batch(x, y)
    fa.train_batch(x, y)
    w_bp = [layer.projection.weight for layer in bp_net.layers]
    w_fa = [layer.projection.weight for layer in fa_net.layers]
    torch.testing.assert_close(w_fa[-1], w_bp[-1])  # the output layer's gradient needs no B
    for a, b in zip(w_fa[:-1], w_bp[:-1], strict=True):  # hidden layers: other updates
        assert not torch.allclose(a, b)
    for _ in range(3):
        fa.train_batch(x, y)
    for b, b0 in zip(fa.fixed.values(), fixed, strict=True):
        assert torch.equal(b, b0)  # B never changes
    assert fa.fixed["fc1" if arch == "fc" else "conv1"] is fa_net.layers[0].projection.feedback
    state = copy.deepcopy(fa.state_dict())  # the checkpoint restores B
    with torch.no_grad():
        next(iter(fa.fixed.values())).add_(1.0)
    fa.load_state_dict(state)
    assert torch.equal(next(iter(fa.fixed.values())), fixed[0])


# --- direct feedback alignment -----------------------------------------------------------------


def test_dfa_hidden_gradients_come_from_the_output_error_alone(digits):
    """dL/dh_i = e B_i with e = (softmax(z) - onehot(y)) / B, and dL/dW_i is the backward of
    that through layer i only, computed here by hand on a copy of the network."""
    x, y = batch(digits)
    net, dfa = learner_for("dfa", "conv")
    m = 10
    assert list(dfa.fixed) == list(net.names[:-1])
    assert [tuple(b.shape) for b in dfa.fixed.values()] == [
        (m, int(torch.tensor(s).prod())) for s in net.shapes[:-1]
    ]
    assert net.shapes[:-1] == ((8, 3, 3), (16, 1, 1), (32,))
    before = copy.deepcopy(net)
    arrived = {}

    def capture(name):
        def hook(module, args, out):
            out[0].register_hook(lambda g: arrived.__setitem__(name, g))

        return hook

    for name, layer in zip(net.names, net.layers, strict=True):
        layer.register_forward_hook(capture(name))
    dfa.train_batch(x, y)

    h, hidden = x, []
    for layer in before.layers[:-1]:
        h, _ = layer(h.detach())
        hidden.append(h)
    z, _ = before.layers[-1](h.detach())
    e = (torch.softmax(z, 1) - F.one_hot(y, m).float()) / x.shape[0]
    for i, (name, h) in enumerate(zip(net.names, hidden, strict=False)):
        g = (e.detach() @ dfa.fixed[name]).view_as(h)
        torch.testing.assert_close(arrived[name], g)  # nothing else reaches h_i
        w_before = before.layers[i].projection.weight
        expected = torch.autograd.grad(h, w_before, g, retain_graph=True)[0]
        torch.testing.assert_close(net.layers[i].projection.weight.grad, expected)
    ce = F.cross_entropy(z, y)
    expected_out = torch.autograd.grad(ce, before.layers[-1].projection.weight)[0]
    torch.testing.assert_close(net.layers[-1].projection.weight.grad, expected_out)


# --- local learning ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["ll-bp", "ll-fa"])
def test_ll_heads_train_only_their_block(digits, rule):
    """Every gradient a parameter receives arrives while its own block is at work."""
    x, y = batch(digits)
    net, ll = learner_for(rule, "conv")
    assert isinstance(ll, LocalLearning) and ll.names == net.names
    assert len(ll.heads) == len(net.layers) - 1
    current, wrong, touched = {"block": None}, [], set()
    for i, layer in enumerate(net.layers):
        layer.register_forward_pre_hook(lambda mod, args, i=i: current.__setitem__("block", i))
    owners = [(i, p) for i, layer in enumerate(net.layers) for p in layer.parameters()]
    owners += [(i, p) for i, head in enumerate(ll.heads) for p in head.parameters()]
    for owner, p in owners:

        def hook(param, owner=owner):
            touched.add(owner)
            if current["block"] != owner:
                wrong.append((owner, current["block"]))

        p.register_post_accumulate_grad_hook(hook)
    losses, errors = ll.train_batch(x, y)
    assert not wrong
    assert touched == set(range(len(net.layers)))
    assert losses.shape == errors.shape == (len(net.layers),)
    assert all(p.grad is None for p in net.signal.parameters())
    if rule == "ll-fa":  # the auxiliary classifiers' feedback is fixed
        assert len(ll.fixed) == len(ll.heads)
        fixed = [b.clone() for b in ll.fixed.values()]
        ll.train_batch(x, y)
        assert all(torch.equal(a, b) for a, b in zip(ll.fixed.values(), fixed, strict=True))


def test_similarity_matrix_and_predsim_loss():
    onehot = F.one_hot(torch.tensor([0, 1, 0]), 3).float()
    r = similarity(onehot)  # centred one-hot vectors: same class 1, different classes -1/2
    torch.testing.assert_close(r, torch.tensor([[1, -0.5, 1], [-0.5, 1, -0.5], [1, -0.5, 1]]))
    maps = torch.randn(3, 4, 5, 5)  # C > 3, H > 1: per-channel std over positions
    torch.testing.assert_close(similarity(maps), similarity(maps.flatten(2).std(2)))


# --- every rule: learns, runs on every architecture, diverges loudly ---------------------------


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_reduces_the_loss_on_digits(digits, rule):
    config = dcfg(rule, "fc", hidden=[64])
    config = cfg.with_overrides(config, [(["train", "lr"], 2e-3)])
    losses = []
    for _ in range(2):  # deterministic: the same losses twice
        net = build_network(config, DIGITS, 10)
        trainer = DiscreteTrainer(net, make_learner(net, config), config, CPU)
        losses.append([trainer.train_epoch(digits, e)["loss"][-1] for e in range(3)])
    assert losses[0] == losses[1]
    assert losses[0][-1] < 0.9 * losses[0][0]


@pytest.mark.parametrize("arch", ["conv", "vgg8b"])
def test_every_rule_runs_on_conv_networks(digits, arch):
    x, y = batch(digits, 8)
    for rule in RULES:
        net, learner = learner_for(rule, arch)
        losses, wrong = learner.train_batch(x, y)
        assert losses.shape == wrong.shape == (len(learner.names),)
        assert bool(torch.isfinite(losses).all())
        net.eval()
        with torch.no_grad():
            assert learner.predict_exits(x).shape == (8, len(learner.names))


def test_shallow_trains_the_classifier_only(digits):
    x, y = batch(digits)
    net, shallow = learner_for("shallow")
    before = copy.deepcopy(net.state_dict())
    shallow.train_batch(x, y)
    after = net.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        if key.startswith("layers.2."):
            assert changed
        elif "running" not in key and "num_batches" not in key:
            assert not changed, key


@pytest.mark.parametrize(("rule", "layer"), [("bp", "out"), ("dfa", "out"), ("ll-bp", "fc1")])
def test_nan_loss_raises_divergence_with_the_layer(digits, rule, layer):
    x, y = batch(digits)
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    _, learner = learner_for(rule)
    with pytest.raises(DivergenceError, match=f"layer {layer}"):
        learner.train_batch(x, y)


# --- runs: ctsp train, checkpoint and resume ---------------------------------------------------


@pytest.mark.parametrize("rule", ["fa", "dfa", "ll-fa"])
def test_train_resume_repeats_an_uninterrupted_run(tmp_path, rule):
    """The learner state (optimizers, fixed matrices, auxiliary heads) goes through the
    checkpoint: 2 epochs + 1 resumed equal 3 epochs in one go (constant learning rate)."""
    config = cfg.with_overrides(dcfg(rule), [(["train", "epochs"], 3), (["train", "decay"], 1.0)])
    full = train(config, tmp_path / "full", **QUIET)
    two = cfg.with_overrides(config, [(["train", "epochs"], 2)])
    train(two, tmp_path / "split", **QUIET)
    split = train(config, tmp_path / "split", resume=True, **QUIET)
    for key in ("train_loss", "test_exit_error"):
        xr.testing.assert_equal(full.metrics[key], split.metrics[key])
    names = ["fc1", "fc2", "out"] if rule.startswith("ll") else ["out"]
    assert list(full.metrics.layer.values) == names


def test_ctsp_train_with_a_baseline_rule(tmp_path, capsys):
    out = tmp_path / "bp"
    args = ["train", "--set", "train.rule=bp", "--epochs", "1", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    with xr.open_dataset(out / "metrics.nc", engine="scipy") as m:
        assert list(m.layer.values) == ["out"]
        assert float(m.test_error[-1]) < 0.9
    assert "final test error" in capsys.readouterr().out
