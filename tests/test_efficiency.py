"""analysis.efficiency: per-layer time and memory of every learning rule's training step."""

from collections import defaultdict

import pytest
import torch

from analysis.efficiency import (
    COUNTED,
    MIB,
    OTHER,
    TARGET,
    TOTAL,
    UPDATE,
    Sections,
    _CpuMemory,
    markdown,
    measure,
)
from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.config import make_learner
from models import build_discrete_network as build_network

RULES = ("sigprop", "bp", "fa", "dfa", "ll-bp", "ll-fa", "shallow")


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def dcfg(arch="fc", **sections):
    model = {"arch": arch, "hidden": [32, 32] if arch == "fc" else [32], "channels": [8, 16]}
    return cfg.from_dict({"model": model, **sections}, cfg.DiscreteRunConfig)


def test_rows_have_every_layer_of_every_rule(digits):
    config = dcfg()
    rows = measure(config, RULES, data=digits, batch_size=32, repeats=1, warmup=1)
    names = ["fc1", "fc2", "out"]
    for rule in RULES:
        mine = [r for r in rows if r["rule"] == rule]
        layers = [r["layer"] for r in mine]
        assert layers[: len(names)] == names and layers[-1] == TOTAL
        extra = {"sigprop": [TARGET], "bp": [UPDATE], "fa": [UPDATE], "dfa": [UPDATE]}
        assert layers[len(names) : -1] == extra.get(rule, [])
        for r in mine:
            assert r["time_us"] > 0 and r["memory_mib"] > 0, (rule, r["layer"])
            assert r["batch"] == 32 and r["device"] == "cpu" and r["run"] == rule
        total = mine[-1]
        assert total["persistent_mib"] > 0
        assert total["memory_mib"] >= max(r["memory_mib"] for r in mine[:-1])
    text = markdown(rows)
    assert COUNTED in text and "| fc2 |" in text and "| update |" in text


def saved_for_backward(config, x, y) -> dict[str, dict[int, int]]:
    """The tensors autograd saves for the backward pass in one training step, per part of the
    network (:class:`Sections` labels): storage address -> bytes, each storage once; those of
    the parameters, buffers and the batch (allocated before the step) left out. Independent of
    the meter: read from the saved tensors (saved_tensors_hooks), not from the allocator."""
    net = build_network(config, (1, 8, 8), 10)
    learner = make_learner(net, config)
    net.train()
    learner.train_batch(x, y)  # the optimizers' state exists, as after measure's warm-up
    tensors = [*net.parameters(), *net.buffers(), x, y]
    before = {t.untyped_storage().data_ptr() for t in tensors}
    part, saved = [OTHER], defaultdict(dict)

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in before:
            saved[part[0]][storage.data_ptr()] = storage.nbytes()
        return tensor

    with Sections(net, lambda label: part.__setitem__(0, label)):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            learner.train_batch(x, y)
    return saved


def test_sp_and_bp_per_layer_memory_at_the_same_batch(digits):
    """The comparison the paper makes (Table II): both rules, the same batch, every layer of
    a conv network. Which needs less is for the table to show, not for a test to assert.

    What is asserted: a layer's peak is at least the bytes of the tensors its rule must hold
    while that layer's part runs, the tensors autograd saves for the backward pass (counted
    from their storages, not from the allocator that the meter reads). Sigprop updates each
    layer from its own loss: the layer's own saved tensors. BP keeps every layer's until the
    end-to-end backward pass: those of all layers up to this one."""
    config = dcfg("conv", signal={"into": "sparse"})
    rows = measure(config, ("sigprop", "bp"), data=digits, batch_size=16, repeats=1, warmup=1)
    assert {r["batch"] for r in rows} == {16}
    peak = {(r["rule"], r["layer"]): r["memory_mib"] * MIB for r in rows}
    x, y = digits.train_x[:16], digits.train_y[:16]
    for rule in ("sigprop", "bp"):
        saved = saved_for_backward(cfg.with_overrides(config, [(["train", "rule"], rule)]), x, y)
        held = {}
        for layer in ("conv1", "conv2", "fc1", "out"):
            held = {**held, **saved[layer]} if rule == "bp" else saved[layer]
            need = sum(held.values())
            assert need >= 16 * 4, (rule, layer)  # at least one float per example
            assert peak[(rule, layer)] >= need, (rule, layer, peak[(rule, layer)], need)


def labels_of(rule, digits, **sections):
    config = cfg.with_overrides(dcfg(**sections), [(["train", "rule"], rule)])
    net = build_network(config, (1, 8, 8), 10)
    learner = make_learner(net, config)
    seen = []
    with Sections(net, seen.append):
        learner.train_batch(digits.train_x[:16], digits.train_y[:16])
    return seen


def test_sections_follow_the_work(digits):
    """BP: forward up, backward down, one update; sigprop: one layer after the other, the
    target generator inside the first; LL: one block after the other."""
    assert labels_of("bp", digits) == ["fc1", "fc2", "out", "fc2", "fc1", UPDATE, OTHER]
    assert labels_of("sigprop", digits) == ["fc1", TARGET, "fc1", "fc2", "out"]
    into_input = labels_of("sigprop", digits, signal={"into": "input"})
    assert into_input == [TARGET, OTHER, "fc1", "fc2", "out"]
    assert labels_of("ll-bp", digits) == ["fc1", "fc2", "out"]
    assert labels_of("dfa", digits) == ["fc1", "fc2", "out", "fc2", "fc1", UPDATE, OTHER]


def test_cpu_memory_meter_counts_allocations_and_frees():
    meter = _CpuMemory()
    keep = []

    def lead_in():
        keep.append(torch.ones(2**18))  # 1 MiB allocated before the measured part

    meter.start(lead_in)
    meter.mark("a")
    a = torch.ones(2**19)  # +2 MiB
    del a
    meter.mark("b")
    keep.clear()  # -1 MiB (allocated under the profiler, so its free counts)
    b = torch.ones(2**18)  # +1 MiB: back to the start level
    del b
    peak = meter.stop()
    assert peak["a"] == pytest.approx(2.0 * 2**20, rel=0.01)
    assert peak["b"] == pytest.approx(0.0, abs=0.01 * 2**20)


def test_the_parallel_performance_model_against_its_formulas_by_hand():
    from analysis import Link, pipeline_seconds, replica_seconds, stage_seconds

    link = Link(latency=1e-3, bandwidth=1e6)  # 1 ms per message, 1 MB/s
    assert link.send(2e6) == pytest.approx(2.001)
    assert link.all_reduce(1e6, 1) == 0.0
    assert link.all_reduce(1e6, 2) == pytest.approx(2e-3 + 1.0)  # 2 steps of half the bytes
    assert link.all_reduce(1e6, 4) == pytest.approx(6e-3 + 1.5)
    layers, carry = [1.0, 2.0, 3.0], [1e6, 2e6, 0.0]
    # stage 0: layers 0-1 and its send of layer 1's carry; stage 1: layer 2, the receive, a report
    assert stage_seconds(layers, carry, [(0, 2), (2, 3)], link) == pytest.approx(
        [3.0 + 2.001, 3.0 + 2.001 + 0.001]
    )
    # 10 minibatches: 11 paces of the slower stage, and the state sent twice (100 kB)
    assert pipeline_seconds(layers, carry, [(0, 2), (2, 3)], link, 10, 1e5) == pytest.approx(
        11 * 5.002 + 2 * 0.101
    )
    assert pipeline_seconds(layers, carry, [(0, 3)], link, 10) == pytest.approx(60.0)
    # 3 minibatches of 0.5 s a shard, two optimizer steps (1 MB, 2 MB), 2 batch norms
    comm = (1.002 + 2.002) + 9 * 2e-3
    assert replica_seconds(0.5, [1e6, 2e6], 2, link, 2, 3) == pytest.approx(3 * (0.5 + comm))
