"""Every training backend of ``ctsp.parallel`` through both transports: between the threads of
this process (``LocalTransport``, fast) and between processes over gloo (``DistTransport``,
slow: two processes start). The same assertions for both: a layer pipeline gives the single
process's epochs bit for bit, replicas give them to float rounding and agree with each other;
and the messages keep every tensor's bits, dtype and memory layout."""

import contextlib
import dataclasses
import os
import subprocess
import sys
import threading

import pytest
import torch

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.config import make_learner
from ctsp.discrete import DiscreteTrainer
from ctsp.errors import WorkerError
from ctsp.parallel import (
    Batch,
    Epoch,
    LocalWorld,
    Report,
    Stop,
    build_backend,
    decode,
    encode,
    run_local,
)
from models import build_discrete_network

CASES = {
    "fc": {"model": {"hidden": [32, 32], "dropout": 0.2}, "signal": {"target_dropout": True}},
    "fc-target-loop": {"model": {"hidden": [32, 32]}, "signal": {"generator": "target-loop"}},
    "conv": {"model": {"arch": "conv", "channels": [4, 8], "hidden": [16], "dropout": 0.1}},
}
_GLOBAL_RNG = threading.Lock()
PARALLEL = {"single": {}, "pipeline": {"stages": 2}, "replicas": {"replicas": 2}}


def _data():
    """128 digits training images (4 minibatches of 32), 100 test images."""
    data = datasets.load("digits")
    return dataclasses.replace(
        data, train_x=data.train_x[:128], train_y=data.train_y[:128],
        test_x=data.test_x[:100], test_y=data.test_y[:100],
    )  # fmt: skip


def _run(case: str, backend: str, transport=None, built=lambda: None):
    """Two epochs of ``case`` on ``backend`` as this rank of ``transport``'s world (None: one
    process). Rank 0 returns (the epochs' statistics, the network's state); the others None.
    ``built`` is called once the network is built (ranks in threads wait there for each other:
    a rank that starts training seeds torch's global generator, ``begin_epoch``)."""
    spec = {**CASES[case], "train": {"batch_size": 32}, "parallel": PARALLEL[backend]}
    config = cfg.from_dict(spec, cfg.DiscreteRunConfig)
    data = _data()
    with _GLOBAL_RNG:  # ranks in threads of one process share torch's global generator
        torch.manual_seed(0)
        net = build_discrete_network(config, data.image_shape, data.classes)
    built()
    trainer = DiscreteTrainer(net, make_learner(net, config), config, torch.device("cpu"))
    costs = lambda: net.multiply_adds(data.image_shape, 32)  # noqa: E731
    trainer.backend = build_backend(config.parallel, transport, costs)
    if transport is not None and transport.rank > 0:
        trainer.backend.serve(trainer, data)
        return None
    stats = [trainer.train_epoch(data, epoch) for epoch in range(2)]
    trainer.backend.stop()
    return stats, {k: v.clone() for k, v in net.state_dict().items()}


def _local(case: str, backend: str):
    barrier = threading.Barrier(2, timeout=60)
    return run_local(
        2, lambda rank, world: _run(case, backend, world.transport(rank), barrier.wait)
    )


GLOO = (
    "import sys, torch; sys.path.insert(0, sys.argv[1]); import test_backends as t\n"
    "from ctsp.parallel import World, process_group\n"
    "torch.set_num_threads(1)\n"
    "with process_group(World.from_environment(), 2, torch.device('cpu')) as transport:\n"
    "    out = t._run(sys.argv[2], sys.argv[3], transport)\n"
    "torch.save(out, f'{sys.argv[4]}/{transport.rank}.pt')\n"
)


def _gloo(case: str, backend: str, tmp_path):
    port = str(29600 + os.getpid() % 1000)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GLOO, os.path.dirname(__file__), case, backend, str(tmp_path)],
            env={
                **os.environ,
                "RANK": str(r),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
        )
        for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    return [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(2)]


TRANSPORTS = {
    "local": lambda case, backend, tmp_path: _local(case, backend),
    "gloo": _gloo,
}
TRANSPORT_PARAMS = ["local", pytest.param("gloo", marks=pytest.mark.slow)]


@contextlib.contextmanager
def _one_thread():
    """One torch thread (the ranks' and the single process's sums split alike), restored after:
    later tests in this process run with the default."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread():
    with _one_thread():
        yield


@pytest.fixture(scope="module")
def single():
    with _one_thread():
        return {case: _run(case, "single") for case in CASES}


@pytest.mark.parametrize("transport", TRANSPORT_PARAMS)
@pytest.mark.parametrize("case", list(CASES))
def test_a_pipeline_gives_the_single_process_epochs_bit_for_bit(single, case, transport, tmp_path):
    results = TRANSPORTS[transport](case, "pipeline", tmp_path)
    assert results[1] is None
    (stats, state), (one_stats, one_state) = results[0], single[case]
    assert stats == one_stats
    assert [k for k in one_state if not torch.equal(state[k], one_state[k])] == []


@pytest.mark.parametrize("transport", TRANSPORT_PARAMS)
@pytest.mark.parametrize("case", ["fc", "conv"])
def test_replicas_give_the_single_process_epochs_to_rounding(single, case, transport, tmp_path):
    results = TRANSPORTS[transport](case, "replicas", tmp_path)
    (stats, state), (one_stats, one_state) = results[0], single[case]
    for ours, theirs in zip(stats, one_stats, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
        assert ours["exit_error"] == pytest.approx(theirs["exit_error"], abs=2 / 128)
    for k, v in one_state.items():
        if v.is_floating_point():
            assert float((state[k] - v).norm()) <= 1e-3 * float(v.norm()) + 1e-5, k


@pytest.mark.slow
def test_replicas_sum_the_same_way_in_threads_and_in_processes(tmp_path):
    """Two ranks' sums are the same floats whichever transport adds them."""
    local, gloo = _local("fc", "replicas")[0], _gloo("fc", "replicas", tmp_path)[0]
    assert local[0] == gloo[0]
    assert all(torch.equal(local[1][k], gloo[1][k]) for k in local[1])


def _same(a, b) -> bool:
    """The same values, tensors equal in their bits (NaN included), dtype and memory layout."""
    if isinstance(a, torch.Tensor):
        bits = lambda t: t.contiguous().view(torch.uint8)  # noqa: E731
        layouts = [
            (t.is_contiguous(), t.is_contiguous(memory_format=torch.channels_last)) for t in (a, b)
        ]
        return a.dtype == b.dtype and torch.equal(bits(a), bits(b)) and layouts[0] == layouts[1]
    if isinstance(a, tuple):
        return all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.mark.parametrize(
    "message",
    [
        Batch(
            (torch.randn(3, 4, 5, 6).to(memory_format=torch.channels_last), None), torch.arange(3)
        ),
        Batch((torch.randn(7, 5).bfloat16(), torch.randn(10, 5)), torch.tensor([1, 2])),
        Report(torch.tensor([0.5, float("nan")]), torch.tensor([3, 4])),
        Epoch(4, 0.1 + 1e-17, {"net": {"w": torch.ones(2)}, "learner": {}}),
        Stop(),
    ],
    ids=["channels-last", "bfloat16", "report", "epoch-with-state", "stop"],
)
def test_a_message_keeps_every_bit_dtype_and_layout(message):
    encoded = encode(message)
    back = decode(encoded.header, encoded.payload)
    assert type(back) is type(message)

    for field in dataclasses.fields(message):
        assert _same(getattr(message, field.name), getattr(back, field.name)), field.name


def test_a_rank_that_never_answers_is_named_with_its_group():
    world = LocalWorld(2)
    transport = world.transport(0, "the layer pipeline")
    import ctsp.parallel.transport as module

    before, module.LOCAL_TIMEOUT = module.LOCAL_TIMEOUT, 0.1
    try:
        with pytest.raises(WorkerError, match="rank 1 of the layer pipeline stopped answering"):
            transport.recv(1)
    finally:
        module.LOCAL_TIMEOUT = before
