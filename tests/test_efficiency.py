"""analysis.efficiency: per-layer time and memory of every learning rule's training step."""

import pytest
import torch

from analysis.efficiency import (
    COUNTED,
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
from ctsp.discrete import build_network, make_learner

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


def test_sp_and_bp_per_layer_memory_at_the_same_batch(digits):
    """The comparison the paper makes (Table II): both rules, the same batch, every layer of
    a conv network. Which needs less is for the table to show, not for a test to assert."""
    config = dcfg("conv", signal={"into": "sparse"})
    rows = measure(config, ("sigprop", "bp"), data=digits, batch_size=16, repeats=1, warmup=1)
    by = {(r["rule"], r["layer"]): r for r in rows}
    for layer in ("conv1", "conv2", "fc1", "out", TOTAL):
        assert by[("sigprop", layer)]["memory_mib"] > 0 and by[("bp", layer)]["memory_mib"] > 0
    assert {r["batch"] for r in rows} == {16}


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
