"""Discrete sigprop: target generators, L_pred, sparse targets, locality, runs and `ctsp train`."""

import math

import pytest
import torch
import xarray as xr

from ctsp import config as cfg
from ctsp import runs
from ctsp.app import train
from ctsp.cli import main
from ctsp.config import make_learner
from ctsp.discrete import ClassifierCE, DiscreteTrainer, LPred, Sigprop, augment, learning_rate
from ctsp.errors import ConfigError, DivergenceError
from ctsp.nn import (
    Conv2d,
    Linear,
    SignalLayer,
    StaticNeuron,
    TargetInput,
    TargetLoop,
    TargetLoopError,
    TargetOnly,
    o_dot,
    o_l2,
    recalibrate_batch_norm,
)
from models import LayeredNetwork
from models import build_discrete_network as build_network
from models.discrete import build, count_parameters

DIGITS = (1, 8, 8)
CPU = torch.device("cpu")
QUIET = {"progress": False, "log": lambda s: None}


def dcfg(**sections):
    return cfg.from_dict(sections, cfg.DiscreteRunConfig)


def set_projection(p, weight, bias):
    with torch.no_grad():
        p.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        p.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def weights(path):
    return torch.load(path / "checkpoint.pt", weights_only=False)


# --- target generators (Sec. III-D) against hand-computed examples ----------------------------


def test_target_only_eq1():
    """t_k = f(S c_k + d): column k of S plus d, through leaky ReLU (slope 0.01)."""
    gen = TargetOnly(2, (3,), slope=0.01)
    set_projection(gen.project, [[1, -1], [2, 0], [0, 3]], [0, 1, -1])
    expected = [[1.0, 3.0, -0.01], [-0.01, 1.0, 2.0]]
    torch.testing.assert_close(gen(), torch.tensor(expected))
    identity = TargetOnly(2, (3,), slope=None)  # a target standing for an input: no f
    set_projection(identity.project, [[1, -1], [2, 0], [0, 3]], [0, 1, -1])
    torch.testing.assert_close(identity(), torch.tensor([[1.0, 3.0, -1.0], [-1.0, 1.0, 2.0]]))
    shaped = TargetOnly(10, (2, 3, 3), slope=0.01)
    assert shaped().shape == (10, 2, 3, 3)


def test_target_input_eq10():
    """t_bk = h_b * f(S1 c_k + d1) + f(S2 c_k + d2): a per-sample scale and shift."""
    gen = TargetInput(2, (2,), slope=0.01)
    set_projection(gen.scale, [[1, 0], [0, 1]], [0, 0])  # scale_k = c_k
    set_projection(gen.shift, [[0, 0], [0, 0]], [0.5, -1])  # shift = f([0.5, -1])
    t = gen(base=torch.tensor([[2.0, 3.0], [1.0, -1.0]]))
    expected = [[[2.5, -0.01], [0.5, 2.99]], [[1.5, -0.01], [0.5, -1.01]]]
    assert t.shape == (2, 2, 2)  # (B, m, features)
    torch.testing.assert_close(t, torch.tensor(expected))


def test_target_loop_eq11_and_eq12():
    """Eq. 11: t_bk = f(S y_b + S c_k + d); Eq. 12: t_bk = f(S (z_b - eta dL_k/dz_b) + d) with
    dL_k/dz_b = softmax(z_b) - c_k. With S = I, d = 0 and no f the target is the context."""
    eq11 = TargetLoop(2, (2,), slope=None)
    set_projection(eq11.project, [[1, 0], [0, 1]], [0, 0])
    t = eq11(feedback=torch.tensor([[0.0, 0.0]]))  # y = softmax(0, 0) = (0.5, 0.5)
    torch.testing.assert_close(t, torch.tensor([[[1.5, 0.5], [0.5, 1.5]]]))

    eq12 = TargetLoopError(2, (2,), slope=None, eta=0.5)
    set_projection(eq12.project, [[1, 0], [0, 1]], [0, 0])
    s = math.exp(2) / (math.exp(2) + 1)  # softmax(2, 0)[0]
    expected = [[[2 - 0.5 * (s - 1), -0.5 * (1 - s)], [2 - 0.5 * s, 0.5 * s]]]
    torch.testing.assert_close(eq12(feedback=torch.tensor([[2.0, 0.0]])), torch.tensor(expected))
    assert eq12.per_sample and eq12.needs_feedback and not TargetOnly.per_sample


# --- comparisons O and the losses --------------------------------------------------------------


H = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
T = torch.tensor([[1.0, 1.0], [0.0, 1.0]])  # targets of classes 0 and 1
Y = torch.tensor([0, 1])


def test_o_dot_o_l2_and_l_pred_eq9():
    torch.testing.assert_close(o_dot(H, T), torch.tensor([[1.0, 0.0], [2.0, 2.0]]))  # Eq. 6
    torch.testing.assert_close(o_l2(H, T), torch.tensor([[-1.0, -2.0], [-2.0, -1.0]]))  # Eq. 7
    rule = LPred([], compare="dot")
    loss, logits = rule.loss(H, T, Y)
    expected = (math.log(1 + math.exp(-1)) + math.log(2)) / 2  # CE of the logits above
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert logits.argmax(1).tolist() == [0, 0]  # the second sample's exit is a tie -> class 0
    loss_l2, _ = LPred([], compare="l2").loss(H, T, Y)
    assert loss_l2.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    per_sample = T.expand(2, 2, 2)  # (B, m, F): the same targets for every sample
    torch.testing.assert_close(o_dot(H, per_sample), o_dot(H, T))
    torch.testing.assert_close(o_l2(H, per_sample), o_l2(H, T))
    z = torch.tensor([[3.0, -1.0]])
    assert ClassifierCE([]).loss(z, None, torch.tensor([1]))[0].item() == pytest.approx(
        math.log(1 + math.exp(4)), rel=1e-6
    )


def test_comparisons_on_maps_dense_and_sparse():
    """Maps: the channel dot product averaged over positions; a 1x1 (sparse) target broadcast."""
    h = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    dense = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert o_dot(h, dense).item() == pytest.approx(5 / 4)
    assert o_l2(h, dense).item() == pytest.approx(-(0 + 4 + 9 + 9) / 4)
    sparse = torch.tensor(2.0).view(1, 1, 1, 1)
    assert o_dot(h, sparse).item() == pytest.approx(2 * 2.5)
    assert o_l2(h, sparse).item() == pytest.approx(-(1 + 0 + 1 + 4) / 4)


# --- the static neuron: batch-norm statistics from inputs only (Sec. III-D) -------------------


def test_batch_norm_statistics_come_from_the_inputs():
    torch.manual_seed(0)
    h, t = torch.randn(16, 3) * 2 + 1, torch.randn(10, 3) * 50 - 20  # very different targets
    neuron = StaticNeuron(3, slope=1.0)  # slope 1: the activation is the identity
    reference = torch.nn.BatchNorm1d(3)
    out_h, out_t = neuron(h, t)
    torch.testing.assert_close(out_h, reference(h))
    torch.testing.assert_close(neuron.running_mean, reference.running_mean)
    torch.testing.assert_close(neuron.running_var, reference.running_var)
    mean, var = h.mean(0), h.var(0, unbiased=False)
    torch.testing.assert_close(out_t, (t - mean) / torch.sqrt(var + 1e-5))  # h's statistics

    running = StaticNeuron(3, slope=1.0, bn_targets="running")
    _, out_t = running(h, t)
    torch.testing.assert_close(out_t, t / math.sqrt(1 + 1e-5))  # fresh running stats: 0, 1
    joint = StaticNeuron(3, slope=1.0, bn_targets="joint")
    both = torch.cat([h, t])
    torch.testing.assert_close(torch.cat(joint(h, t)), torch.nn.BatchNorm1d(3)(both))

    neuron.eval()  # inference: running statistics for both paths
    out_h, out_t = neuron(h, t)
    rm, rv = reference.running_mean, reference.running_var
    torch.testing.assert_close(out_t, (t - rm) / torch.sqrt(rv + 1e-5))


def test_dropout_after_activation_and_leaky_relu():
    torch.manual_seed(0)
    neuron = StaticNeuron(1000, batch_norm=False, slope=0.01, dropout=0.5)
    x = torch.full((4, 1000), -2.0)
    out, _ = neuron(x)
    values = out.unique()  # leaky ReLU: -0.02, kept ones scaled by 1 / (1 - 0.5)
    torch.testing.assert_close(values, torch.tensor([-0.04, 0.0]))
    neuron.eval()
    assert torch.equal(neuron(x)[0], torch.full((4, 1000), -0.02))


def test_targets_pass_without_dropout_unless_asked():
    torch.manual_seed(0)
    h, t = torch.ones(4, 1000), torch.ones(10, 1000)
    neuron = StaticNeuron(1000, batch_norm=False, dropout=0.5)
    out_h, out_t = neuron(h, t)
    assert set(out_h.unique().tolist()) == {0.0, 2.0}  # dropped, the rest scaled by 1 / 0.5
    assert torch.equal(out_t, t)  # the target path keeps every unit
    with_targets = StaticNeuron(1000, batch_norm=False, dropout=0.5, target_dropout=True)
    _, out_t = with_targets(h, t)
    assert set(out_t.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(out_t[0], out_t[1])  # an independent mask per target row


@pytest.mark.slow
def test_target_dropout_stalls_sparse_targets_on_flat_layers(tmp_path):
    """Why targets skip dropout (docs/results.md): with sparse (1x1) targets, independent dropout
    masks on the class targets drown the class differences in fc1's comparison h . t_k, which
    stays at chance, while without target dropout it learns (same seed and data)."""
    model = {"arch": "conv", "channels": [16, 32], "kernel": 3, "pool": 2, "hidden": [128]}
    fc1 = {}
    for target_dropout in (False, True):
        config = dcfg(
            model={**model, "dropout": 0.1},
            signal={"into": "sparse", "target_dropout": target_dropout},
            train={"epochs": 6, "batch_size": 32},
        )
        result = train(config, tmp_path / str(target_dropout), **QUIET)
        fc1[target_dropout] = float(result.metrics.test_exit_error[-1].sel(layer="fc1"))
    assert fc1[False] < 0.6 and fc1[True] > 0.8, fc1


def test_recalibrated_statistics_are_the_average_of_the_batch_statistics():
    """Precise batch norm against a direct computation: layer 1's running mean and variance
    become the mean of its per-batch current means and unbiased variances; layer 2's follow
    from layer 1 normalised with the batch statistics, without dropout. Weights, modes,
    momenta and dropout rates are left as they were."""
    torch.manual_seed(0)
    net = build(
        cfg.ModelConfig(hidden=(6, 5), dropout=0.5), cfg.SignalConfig(), (1, 2, 2), classes=3
    )
    net.eval()
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k}
    batches = [torch.randn(8, 1, 2, 2) * 3 + 1 for _ in range(3)]
    assert recalibrate_batch_norm(net, iter(batches)) == 3
    first, second = net.layers[0], net.layers[1]
    currents = [first.projection(x.flatten(1)) for x in batches]
    torch.testing.assert_close(
        first.neuron.running_mean, torch.stack([c.mean(0) for c in currents]).mean(0)
    )
    torch.testing.assert_close(
        first.neuron.running_var, torch.stack([c.var(0) for c in currents]).mean(0)
    )
    hidden = [
        torch.nn.functional.leaky_relu((c - c.mean(0)) / torch.sqrt(c.var(0, False) + 1e-5), 0.01)
        for c in currents
    ]
    c2 = [second.projection(h) for h in hidden]
    torch.testing.assert_close(
        second.neuron.running_mean, torch.stack([c.mean(0) for c in c2]).mean(0)
    )
    assert not net.training and first.neuron.dropout == 0.5 and first.neuron.momentum == 0.1
    after = {k: v for k, v in net.state_dict().items() if "running" not in k}
    assert all(torch.equal(after[k], weights[k]) for k in weights)


def test_training_recalibrates_before_every_evaluation(tmp_path):
    """With train.recalibrate_bn = N the saved model carries the statistics of N seeded
    training minibatches under its final weights (recomputing them changes nothing), and
    the setting may change on resume."""
    config = dcfg(model={"dropout": 0.2}, train={"epochs": 2, "recalibrate_bn": 3})
    result = train(config, tmp_path / "run", stop_after=1, **QUIET)
    saved = weights(result.path)["model"]
    data = runs.load_data(config)
    net = build_network(config, data.image_shape, data.classes)
    net.load_state_dict(saved)
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(0))
    recalibrate_batch_norm(net, (data.train_x[i] for i in order[: 3 * 128].split(128)))
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)
    more = dcfg(model={"dropout": 0.2}, train={"epochs": 2, "recalibrate_bn": 0})  # resumable
    assert train(more, result.path, resume=True, **QUIET).metrics.sizes["epoch"] == 2


# --- sparse targets (Sec. III-E) ---------------------------------------------------------------
# --- sparse targets (Sec. III-E) ---------------------------------------------------------------


def test_sparse_conv_target_is_shaped_like_the_weights():
    """The paper's example: input 32x28x28, conv 32 -> 16 with 3x3 kernels. The dense target is
    32x28x28; the sparse one 10x32x3x3, met by the kernel once (no weight sharing)."""
    torch.manual_seed(0)
    conv = Conv2d(32, 16, 3, padding=1, grad=True, init="fan_in")
    layer = SignalLayer(conv, StaticNeuron(16))
    h, t = layer(torch.rand(4, 32, 28, 28), torch.rand(10, 32, 3, 3))
    assert h.shape == (4, 16, 28, 28) and t.shape == (10, 16, 1, 1)
    x = torch.rand(10, 32, 3, 3)
    torch.testing.assert_close(conv.once(x), torch.nn.functional.conv2d(x, conv.weight))
    dense = SignalLayer(Conv2d(32, 16, 3, padding=1), StaticNeuron(16))
    assert dense(torch.rand(4, 32, 28, 28), torch.rand(10, 32, 28, 28))[1].shape == (10, 16, 28, 28)
    one = torch.rand(10, 32, 1, 1)  # a 1x1 target meets the kernel's centre
    torch.testing.assert_close(
        conv.once(one), torch.nn.functional.conv2d(one, conv.weight, padding=1)
    )


def test_sparse_fc_target_is_smaller_and_zero_filled():
    """FC input 1024, layer 1024 -> 512: a sparse target of 100 features, zero-filled to 1024,
    meets only the first 100 columns of W (the layer is no longer fully connected for it)."""
    torch.manual_seed(0)
    lin = Linear(1024, 512, grad=True, init="fan_in")
    layer = SignalLayer(lin, StaticNeuron(512))
    h, t0 = torch.rand(8, 1024), torch.rand(10, 100)
    out_h, t1 = layer(h, t0)
    assert out_h.shape == (8, 512) and t1.shape == (10, 512)
    torch.testing.assert_close(layer.project_target(h, t0), t0 @ lin.weight[:, :100].T)


def test_sparse_targets_through_networks():
    torch.manual_seed(0)
    model = cfg.ModelConfig(arch="vgg8b", hidden=(1024,))
    vgg = build(model, cfg.SignalConfig(into="sparse"), (1, 28, 28), 10)
    assert vgg.signal.shape == (1, 3, 3)  # like conv1's weights (c_in, k, k)
    shapes = [
        (tuple(h.shape), None if t is None else tuple(t.shape))
        for h, t in vgg.pairs(torch.rand(2, 1, 28, 28))
    ]
    assert shapes[0] == ((2, 128, 28, 28), (10, 128, 1, 1))
    assert shapes[5] == ((2, 512, 1, 1), (10, 512, 1, 1))
    assert shapes[6] == ((2, 1024), (10, 1024)) and shapes[7] == ((2, 10), None)
    fc = build(cfg.ModelConfig(), cfg.SignalConfig(into="sparse"), DIGITS, 10)
    assert fc.signal.shape == (16,)  # a quarter of the 64 inputs
    with pytest.raises(ConfigError, match="sparse_features = 64 must be smaller"):
        build(cfg.ModelConfig(), cfg.SignalConfig(into="sparse", sparse_features=64), DIGITS, 10)


# --- networks: locality, early exits, shapes ---------------------------------------------------

LOCALITY_CASES = [
    {},
    {"signal": {"into": "input", "generator": "target-input"}},
    {"signal": {"generator": "target-loop-error"}, "model": {"dropout": 0.2}},
    {"model": {"arch": "conv", "channels": [4, 6], "hidden": [16]}, "signal": {"into": "sparse"}},
    {"model": {"prediction": "target", "compare": "l2"}, "signal": {"generator": "target-input"}},
]


@pytest.mark.parametrize("sections", LOCALITY_CASES)
def test_no_gradient_crosses_a_layer(sections):
    """Back-propagating layer i's loss reaches layer i's parameters (and the generator's, for
    layer 1) and no other parameter."""
    torch.manual_seed(0)
    config = dcfg(**sections)
    net = build_network(config, DIGITS, 10)
    trainer = DiscreteTrainer(net, make_learner(net, config), config, CPU)
    groups = [{id(p) for p in net.layer_parameters(i)} for i in range(len(net.layers))]
    assert sum(map(len, groups)) == len(set().union(*groups)) == len(list(net.parameters()))
    x, y = torch.rand(12, *DIGITS), torch.arange(12) % 10
    pairs = list(net.pairs(x))
    assert len(pairs) == len(net.layers)
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


def test_early_exits_give_one_prediction_per_layer():
    torch.manual_seed(0)
    x = torch.rand(5, *DIGITS)
    for model in (
        cfg.ModelConfig(),
        cfg.ModelConfig(arch="conv", channels=(4, 8), hidden=(16,)),
        cfg.ModelConfig(prediction="target"),
    ):
        net = build(model, cfg.SignalConfig(), DIGITS, 10).eval()
        logits = net.exit_logits(x)
        assert len(logits) == len(net.layers) == len(net.names)
        assert all(z.shape == (5, 10) for z in logits)
        pred = net.predict_exits(x)
        assert pred.shape == (5, len(net.layers)) and pred.min() >= 0 and pred.max() < 10
        assert torch.equal(pred[:, -1], net(x).argmax(1))


def test_paper_networks_build_with_their_sizes():
    """Every bundled `ctsp train` config round-trips and builds for its dataset's images;
    VGG8b has 7.3 M parameters for 28x28 and 8.9 M for 32x32 inputs (without the generator)."""
    shapes = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
    names = cfg.bundled_names(cfg.DiscreteRunConfig)
    assert {"fc-3x1000-fmnist", "vgg8b-fmnist", "fc-2x800-mnist", "conv-cifar10"} <= set(names)
    for name in names:
        c = cfg.load(name, cfg.DiscreteRunConfig)
        assert cfg.loads(c.to_toml(), cls=cfg.DiscreteRunConfig) == c
        if c.model.width > 1:
            continue  # VGG8b(2x): 35 M parameters, same code path
        net = build_network(c, shapes[c.data.name], 10)
        n = count_parameters(net.layers)
        if name == "vgg8b-fmnist":
            assert round(n / 1e6, 1) == 7.3
        if name == "vgg8b-cifar10":
            assert round(n / 1e6, 1) == 8.9
        if name == "fc-3x1000-fmnist":
            assert net.names == ("fc1", "fc2", "fc3", "out") and net.layers[0].neuron.dropout == 0.1


def test_continuous_layers_keep_their_defaults():
    """The discrete options leave the loop network's projections as they were."""
    torch.manual_seed(0)
    lin = Linear(4, 3)
    torch.manual_seed(0)
    bound = math.sqrt(6 / 7)
    assert torch.equal(lin.weight, torch.empty(3, 4).uniform_(-bound, bound))
    assert (
        not lin.weight.requires_grad and lin.bias is None and list(lin.state_dict()) == ["weight"]
    )
    keys = list(LayeredNetwork([4, 5, 3]).state_dict())
    assert keys == [
        "tau",
        "projections.input.weight",
        "projections.ff1.weight",
        "projections.loop.weight",
        "biases.0",
        "biases.1",
    ]


# --- the runner --------------------------------------------------------------------------------


def test_learning_rate_schedule_and_augmentation():
    tc = cfg.DiscreteTrainConfig(epochs=100)
    lrs = [learning_rate(tc, e) for e in (0, 49, 50, 74, 75, 89, 93, 94, 99)]
    expected = [
        5e-4,
        5e-4,
        1.25e-4,
        1.25e-4,
        3.125e-5,
        7.8125e-6,
        7.8125e-6,
        1.953125e-6,
        1.953125e-6,
    ]
    assert lrs == pytest.approx(expected)
    x = torch.arange(2 * 16, dtype=torch.float32).view(2, 1, 4, 4)
    out = augment(x, torch.Generator().manual_seed(0), crop=1, flip=True)
    assert out.shape == x.shape
    for img, src in zip(out, x, strict=True):  # each output is a shifted (and maybe flipped) copy
        padded = torch.nn.functional.pad(src, (1, 1, 1, 1))
        crops = [padded[:, i : i + 4, j : j + 4] for i in range(3) for j in range(3)]
        assert any(torch.equal(img, c) or torch.equal(img, c.flip(2)) for c in crops)


def test_small_fc_network_learns_digits(tmp_path):
    """The default network (64-256-256-10 FC) learns the digits far below chance (90 %) at every
    exit, and the run directory holds per-layer early-exit errors."""
    result = train(dcfg(train={"epochs": 10}), tmp_path / "run", **QUIET)
    m = result.metrics
    assert result.final_test_error < 0.2, m.test_error.values
    assert (m.test_exit_error[-1] < 0.2).all(), m.test_exit_error.values
    saved = xr.open_dataset(result.path / "metrics.nc", engine="scipy")
    assert saved.test_exit_error.dims == ("epoch", "layer") and saved.test_exit_error.shape == (
        10,
        3,
    )
    assert list(saved.layer.values) == ["fc1", "fc2", "out"]
    assert saved.train_loss.dims == ("epoch", "layer") and saved.lr.dims == ("epoch",)
    assert saved.attrs["title"] == "ctsp train: digits-fc"
    assert {"config.toml", "metrics.nc", "checkpoint.pt", "best.pt"} <= {
        p.name for p in result.path.iterdir()
    }


def test_resume_gives_the_same_weights(tmp_path, monkeypatch):
    """A run interrupted after epoch 1 and resumed ends with the weights, optimizer states and
    metrics of an uninterrupted one (dropout, random crops and flips included)."""
    config = dcfg(model={"dropout": 0.1}, data={"crop": 1, "flip": True}, train={"epochs": 3})
    full = train(config, tmp_path / "full", **QUIET)
    original = DiscreteTrainer.train_epoch

    def interrupted(self, data, epoch, bar=None, on_batch=None):
        if epoch == 1:
            raise KeyboardInterrupt
        return original(self, data, epoch, bar, on_batch)

    monkeypatch.setattr(DiscreteTrainer, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "part", **QUIET)
    monkeypatch.setattr(DiscreteTrainer, "train_epoch", original)
    resumed = train(config, tmp_path / "part", resume=True, **QUIET)
    a, b = weights(full.path), weights(resumed.path)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["learner"]["rules"].keys() == b["learner"]["rules"].keys()
    for name, sa in a["learner"]["rules"].items():
        sb = b["learner"]["rules"][name]["optimizer"]
        for key, state in sa["optimizer"]["state"].items():
            assert torch.equal(state["exp_avg"], sb["state"][key]["exp_avg"])
    assert (
        resumed.metrics.test_exit_error.values.tolist()
        == full.metrics.test_exit_error.values.tolist()
    )


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "r"
    train(dcfg(train={"epochs": 2}), out, stop_after=1, **QUIET)
    good = weights(out)
    original = Sigprop.train_batch
    calls = []

    def poisoned(self, x, y):
        calls.append(1)
        if len(calls) == 5:
            self.net.layers[1].projection.weight.data.fill_(float("nan"))
        return original(self, x, y)

    monkeypatch.setattr(Sigprop, "train_batch", poisoned)
    with pytest.raises(
        DivergenceError,
        match=r"NaN or Inf in the loss of layer fc2 \(epoch 2\); .* checkpoint of epoch 1$",
    ):
        train(dcfg(train={"epochs": 2}), out, resume=True, **QUIET)
    after = weights(out)
    assert len(after["rows"]) == 1
    for k, v in good["model"].items():
        assert torch.equal(v, after["model"][k])


# --- the command line --------------------------------------------------------------------------


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ctsp_train_default_run_and_resume(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run(
        capsys, "train", "--epochs", "3", "--stop-after", "2", "--out", str(out), "--no-progress"
    )
    assert code == 0 and "epoch   2/3" in stdout and "exits: fc1 " in stdout
    assert "so far: test error" in stdout
    m = xr.open_dataset(out / "metrics.nc", engine="scipy")
    assert m.test_exit_error.dims == ("epoch", "layer") and m.sizes["layer"] == 3
    assert m.sizes["epoch"] == 2
    assert cfg.load(out / "config.toml", cfg.DiscreteRunConfig).train.epochs == 3
    code, _, err = run(capsys, "train", "--epochs", "2", "--out", str(out))
    assert code == 2 and "exists and is not empty; overwrite it with --force" in err
    code, _, err = run(capsys, "train", "--out", str(out), "--resume", "--lr", "0.1")
    assert code == 2 and "differs from the saved run in train.lr" in err
    # re-planning over 4 epochs moves the step-decay milestones into the trained epochs
    code, _, err = run(
        capsys, "train", "--out", str(out), "--resume", "--set", "train.schedule_epochs=4"
    )
    assert code == 2 and "schedule differs in epoch 2" in err and "planned over 3" in err
    # more epochs keep the 3-epoch plan: epoch 4 at its last rate
    code, stdout, _ = run(
        capsys, "train", "--out", str(out), "--resume", "--epochs", "4", "--no-progress"
    )
    assert code == 0 and "epoch   3/4" in stdout and "epoch   4/4" in stdout
    assert "epoch   1/" not in stdout and "epoch 4 trains at the last rate of the 3-epoch" in stdout
    saved = cfg.load(out / "config.toml", cfg.DiscreteRunConfig).train
    assert (saved.epochs, saved.schedule_epochs) == (4, 3)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--set", "model.archh=1"],
            "unknown config key 'model.archh'; valid keys in this section",
        ),
        (["--set", "signal.generator=target-nope"], "invalid value for signal.generator"),
        (["--set", "model.dropout=1.5"], "invalid value for model.dropout: 1.5"),
        (["--set", "train.decay_at=[0.5, 2]"], "invalid value for train.decay_at"),
        (["--set", "nope.x=1"], "unknown config section 'nope'; valid: data, model, signal, train"),
        (
            ["--set", "signal.generator=target-loop", "--set", "model.prediction=target"],
            'needs model.prediction = "classifier"',
        ),
        (["fmnist-2x1500"], "is a bundled `ctsp simulate` config, not a `ctsp train` one"),
        (["--set", "signal.into=sparse", "--set", "signal.sparse_features=99"], "must be smaller"),
    ],
)
def test_bad_config_exits_2_with_one_line(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "train", *argv, "--out", str(tmp_path / "r"))
    assert code == 2
    assert err.startswith("ctsp: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_configs_lists_both_kinds(capsys):
    code, out, _ = run(capsys, "configs")
    words = set(out.split())
    assert code == 0 and {"fmnist-2x1500", "vgg8b-fmnist", "fc-3x1000-fmnist"} <= words
