"""Runs from Python: a caller's dataset and recorders, keyed recorder state, reading runs back
(open_run) and the config documentation (--help-config)."""

import dataclasses

import pytest
import xarray as xr

from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import simulate, train
from ctsp.cli import main
from ctsp.errors import RunDirError
from ctsp.runs import Recorder, markdown_table, open_run

QUIET = {"progress": False, "log": lambda line: None}


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


def subset(data, n: int):
    return dataclasses.replace(data, train_x=data.train_x[:n], train_y=data.train_y[:n])


class Counter(Recorder):
    """Counts minibatches; its count is its state."""

    def __init__(self, name: str) -> None:
        self.name, self.batches, self.epochs = name, 0, []

    def after_batch(self, trainer, epoch, batch):
        self.batches += 1

    def after_epoch(self, trainer, epoch, path, last):
        self.epochs.append(epoch)

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state):
        self.batches = state["batches"]


def test_simulate_takes_a_subset_and_recorders_and_resumes_their_state_by_name(tmp_path, digits):
    config = cfg.from_dict({"train": {"epochs": 2, "chl_backend": "torch"}})
    small = subset(digits, 200)  # 10 minibatches of 20
    a, b = Counter("a"), Counter("b")
    simulate(config, tmp_path / "r", data=small, recorders=[a, b], stop_after=1, **QUIET)
    assert (a.batches, b.batches, a.epochs) == (10, 10, [1])
    # resume with only "b": it continues from its own saved count; "a"'s state is carried on
    b2 = Counter("b")
    simulate(config, tmp_path / "r", data=small, recorders=[b2], resume=True, **QUIET)
    assert (b2.batches, b2.epochs) == (20, [2])
    a3 = Counter("a")
    more = cfg.with_overrides(config, [(["train", "epochs"], 3)])
    simulate(more, tmp_path / "r", data=small, recorders=[a3], resume=True, **QUIET)
    assert a3.batches == 20  # 10 from epoch 1 (kept while it was off) + 10 in epoch 3


def test_recorders_need_distinct_names(tmp_path, digits):
    config = cfg.from_dict({"train": {"epochs": 1}})
    with pytest.raises(ValueError, match="distinct"):
        simulate(config, tmp_path / "r", data=subset(digits, 40), recorders=[Counter("x")] * 2)


def test_open_run_reads_a_finished_and_a_partial_run(tmp_path, digits):
    config = cfg.from_dict(
        {"train": {"epochs": 2}, "record": {"alignment_every": 5}}, cfg.RunConfig
    )
    done = simulate(config, tmp_path / "ct", data=subset(digits, 200), **QUIET)
    run = open_run(done.path)
    assert run.config == config and run.complete and run.epochs_done == 2
    xr.testing.assert_identical(run.metrics, done.metrics)
    assert set(run.best_model) == set(done.network.state_dict())
    assert run.best["epoch"] in (1, 2) and run.alignment.sizes["step"] == 4
    assert run.trajectories is None
    discrete = cfg.from_dict({"train": {"epochs": 3}}, cfg.DiscreteRunConfig)
    part = train(discrete, tmp_path / "fc", data=subset(digits, 256), stop_after=1, **QUIET)
    run = open_run(part.path)
    assert isinstance(run.config, cfg.DiscreteRunConfig)
    assert (run.epochs_done, run.complete) == (1, False)
    with pytest.raises(RunDirError, match="not a run directory"):
        open_run(tmp_path)


def test_help_config_lists_every_key_with_its_valid_values(capsys):
    for command, cls in (("simulate", cfg.RunConfig), ("train", cfg.DiscreteRunConfig)):
        assert main([command, "--help-config"]) == 0
        out = capsys.readouterr().out
        for key, kind, default, valid, meaning in cfg.describe(cls):
            assert f"{key} ({kind}, default {default})" in out and meaning in out
            if valid:
                assert f"valid: {valid}" in out
    rows = dict((r[0], r) for r in cfg.describe(cfg.RunConfig))
    assert rows["solver.method"][3].startswith("euler, midpoint")
    assert "explicit_adams" not in rows["solver.method"][3]
    assert rows["network.sizes"][1:3] == ("list of int", "[64, 256, 10]")


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]


def test_a_checkpoint_of_the_positional_format_is_refused_in_one_line(tmp_path, capsys):
    """Checkpoints written before states were keyed by name (recorders as a list, learner
    state under "optimizers") are refused with one line, not resumed wrongly."""
    import torch

    for command, key, old in (("simulate", "recorders", []), ("train", "optimizers", [{}])):
        out = tmp_path / command
        assert main([command, "--epochs", "2", "--stop-after", "1", "--out", str(out),
                     "--no-progress"]) == 0  # fmt: skip
        ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
        ckpt.pop("learner", None)
        ckpt[key] = old
        torch.save(ckpt, out / "checkpoint.pt")
        assert main([command, "--out", str(out), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "older ctsp version" in err[0], err


def test_an_interrupt_in_the_first_epoch_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, digits
):
    """checkpoint.pt is written before the first epoch: a run stopped inside epoch 1 is resumed
    (no --force needed) and ends with the weights of an uninterrupted run, bitwise."""
    import torch

    from ctsp.continuous import Trainer

    config = cfg.from_dict({"train": {"epochs": 2, "chl_backend": "torch"}})
    small = subset(digits, 200)
    full = simulate(config, tmp_path / "full", data=small, **QUIET)
    original = Trainer.train_batch
    calls = []

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        simulate(config, tmp_path / "part", data=small, **QUIET)
    monkeypatch.setattr(Trainer, "train_batch", original)
    assert open_run(tmp_path / "part").epochs_done == 0
    part = simulate(config, tmp_path / "part", data=small, resume=True, **QUIET)
    for k, v in full.network.state_dict().items():
        assert torch.equal(v, part.network.state_dict()[k]), k


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--seed", "99999999999999999999"], "invalid value for seed"),
        (["simulate", "--set", "solver.free_duration=inf"], "expected a finite number"),
        (["train", "--lr", "nan"], "expected a finite number"),
    ],
)
def test_out_of_range_numbers_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_binary_config_and_a_corrupt_checkpoint_are_one_line(tmp_path, capsys):
    binary = tmp_path / "x.toml"
    binary.write_bytes(bytes(range(256)))
    assert main(["simulate", str(binary)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not UTF-8 text" in err
    out = tmp_path / "run"
    assert main(["simulate", "--epochs", "2", "--stop-after", "1", "--out", str(out),
                 "--no-progress"]) == 0  # fmt: skip
    data = (out / "checkpoint.pt").read_bytes()
    for broken in (data[: len(data) // 2], bytes(range(256)) * 4):
        (out / "checkpoint.pt").write_bytes(broken)
        assert main(["simulate", "--out", str(out), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "cannot read checkpoint" in err, err


def test_a_failed_checkpoint_write_is_one_line_and_leaves_no_file(tmp_path, monkeypatch, capsys):
    """A full disk while the checkpoint is written (ENOSPC): a WriteError naming the file
    (exit 1), no temporary file left, and nothing else either (nothing was saved), so a plain
    rerun works. (tests/test_faults.py fills a "disk" for real, with RLIMIT_FSIZE.)"""
    import errno
    from pathlib import Path

    real = Path.write_bytes

    def full_disk(self, data):
        if self.name.startswith(".checkpoint.pt."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    out = tmp_path / "run"
    assert main(["simulate", "--epochs", "1", "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"cannot write {out / 'checkpoint.pt'}: No space left on device; nothing was" in err
    assert not out.exists()  # the directory it made is gone again
    monkeypatch.setattr(Path, "write_bytes", real)
    assert main(["simulate", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0


def test_a_shortened_run_of_a_bundled_config_trains_at_its_initial_rates():
    """No decay milestone falls on epoch 0: --epochs 1 of fmnist-2x1500 (x1/4 at 50/75/89/94 %)
    and of a train config train at the configured rates; the paper's 100 epochs are unchanged."""
    for name, cls in (
        ("fmnist-2x1500", cfg.RunConfig),
        ("fc-3x1000-fmnist", cfg.DiscreteRunConfig),
    ):
        c = cfg.load(name, cls)
        short = cfg.with_overrides(c, [(["train", "epochs"], 1)])
        assert short.train.lr_factor(0) == 1.0, name
    long = cfg.from_dict({"train": {"epochs": 100}}, cfg.DiscreteRunConfig).train
    assert [long.lr_factor(e) for e in (49, 50, 75, 89, 94)] == [1, 0.25, 0.25**2, 0.25**3, 0.25**4]


def test_resume_and_force_remove_stale_temporary_files(tmp_path):
    out = tmp_path / "run"
    args = ["simulate", "--epochs", "2", "--out", str(out), "--no-progress"]
    assert main([*args, "--stop-after", "1"]) == 0
    (out / ".metrics.nc.abc123.tmp").write_text("left by a kill during a write")
    assert main([*args, "--resume"]) == 0
    assert not list(out.glob(".*.tmp"))
    (out / ".checkpoint.pt.x.tmp").write_text("again")
    assert main([*args, "--force"]) == 0
    assert not list(out.glob(".*.tmp"))


class Threads(Recorder):
    """Records torch's and numba's thread counts after every minibatch."""

    name = "threads"

    def __init__(self) -> None:
        self.seen = set()

    def after_batch(self, trainer, epoch, batch):
        import numba
        import torch

        self.seen.add((torch.get_num_threads(), numba.get_num_threads()))


@pytest.mark.parametrize("threads", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_threads_hold_for_torch_and_numba_and_are_restored(digits, tmp_path, threads):
    """``threads = N`` runs torch and numba on N threads (0: on the user's torch count); the
    numba CHL kernel runs in every minibatch and does not reset torch's count; both counts are
    restored after the run."""
    import numba
    import torch

    before = torch.get_num_threads(), numba.get_num_threads()
    user = 1 if threads == 0 else 2
    torch.set_num_threads(user)
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        probe = Threads()
        c = cfg.from_dict(
            {"threads": threads, "train": {"epochs": 1, "chl_backend": "numba"}}, cfg.RunConfig
        )
        simulate(c, tmp_path / "r", data=subset(digits, 200), recorders=[probe], **QUIET)
        want = threads or user
        assert probe.seen == {(want, min(want, numba.config.NUMBA_NUM_THREADS))}
        assert torch.get_num_threads() == user
    finally:
        numba.set_num_threads(before[1])
        torch.set_num_threads(before[0])


def test_threads_flag_and_key(capsys):
    assert main(["train", "--threads", "3", "--print-config"]) == 0
    assert "threads = 3" in capsys.readouterr().out
    assert main(["simulate", "--threads", "-1"]) == 2
    err = capsys.readouterr().err
    assert "invalid value for threads: -1 (expected >= 0)" in err and err.count("\n") == 1


WAIT_PROBE = (
    "import os, sys; from ctsp.cli import main; main(['configs']); "
    "import torch; sys.stderr.write(repr(os.environ.get('OMP_WAIT_POLICY')))"
)


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_the_command_lets_idle_openmp_threads_sleep_unless_the_user_chose(user):
    """``ctsp`` sets OMP_WAIT_POLICY=PASSIVE before torch loads (a fresh process) and keeps a
    policy the user set; in a process where torch is loaded already it changes nothing."""
    import os
    import subprocess
    import sys

    from ctsp.cli import passive_openmp_wait

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if user is not None:
        env["OMP_WAIT_POLICY"] = user
    done = subprocess.run(
        [sys.executable, "-c", WAIT_PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith(repr(user or "PASSIVE"))
    environ: dict[str, str] = {}
    assert not passive_openmp_wait(environ) and environ == {}  # torch is loaded here


class Scripted:
    """An epoch trainer whose epochs give scripted validation and test errors."""

    learning_keys = ("train.lr",)

    def __init__(self, val, test):
        import torch

        self.net = torch.nn.Linear(2, 2)
        self.val, self.test = val, test

    def train_metrics(self, data, epoch, bar, on_batch=None):
        import torch

        with torch.no_grad():
            self.net.weight.fill_(epoch + 1)  # tells the epochs apart in best.pt
        return {"train_error": 0.1}

    def eval_metrics(self, data):
        k = int(self.net.weight[0, 0]) - 1
        return {"test_error": self.test[k], **({"val_error": self.val[k]} if self.val else {})}

    def extra_state(self):
        return {}

    def load_extra_state(self, ckpt):
        pass

    def summary(self, row):
        return ""


@pytest.mark.parametrize("held_out", [True, False])
def test_best_pt_follows_the_validation_error_never_the_test_error(digits, tmp_path, held_out):
    """Validation lowest at epoch 2, test lowest at epoch 3: best.pt is epoch 2's model; a run
    without a validation split keeps its last model, whatever the test error did."""
    from ctsp.runs import fit, run_directory, selected_epoch

    val, test = [0.30, 0.20, 0.25, 0.28], [0.30, 0.26, 0.18, 0.27]
    data = digits.hold_out(200, 0) if held_out else digits
    config = cfg.with_overrides(cfg.RunConfig(), [(["train", "epochs"], 4)])
    lines = []
    with run_directory(tmp_path / "run", "x") as path:
        metrics = fit(Scripted(val if held_out else None, test), data, config, path,
                      resume=False, resumable=(), progress=False, log=lines.append)  # fmt: skip
    best = open_run(tmp_path / "run").best
    chosen = 2 if held_out else 4
    assert best["epoch"] == chosen and float(best["model"]["weight"][0, 0]) == chosen
    assert best["test_error"] == test[chosen - 1] and selected_epoch(metrics) == chosen - 1
    assert ("selected 26.00% (epoch 2, lowest val_error)" in lines[-1]) == held_out
    assert "18.00%" not in lines[-1]


def _image(path):
    import matplotlib.image

    return matplotlib.image.imread(path)


def test_ctsp_plot_writes_the_learning_curves_of_a_run(tmp_path, capsys):
    """A discrete run (errors, early exits) and a continuous-time one (errors, steps per
    phase): the PNGs open as images."""
    for argv, pngs in (
        (["train", "--epochs", "2", "--set", "data.validation=100"], ["errors", "exits"]),
        (["simulate", "--epochs", "2"], ["errors", "phases"]),
    ):
        out = tmp_path / argv[0]
        assert main([*argv, "--out", str(out), "--no-progress"]) == 0
        capsys.readouterr()
        assert main(["plot", str(out), "--out", str(tmp_path / f"{argv[0]}-png")]) == 0
        written = capsys.readouterr().out.split()
        assert written == [str(tmp_path / f"{argv[0]}-png" / f"{p}.png") for p in pngs]
        for path in written:
            assert _image(path).ndim == 3


def _events(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    return ea


def test_tensorboard_holds_the_runs_scalars_angles_and_histograms(tmp_path):
    """--tensorboard: every scalar of metrics.nc per epoch (per-layer ones as NAME/LAYER), the
    loop angles of the epoch, a histogram per parameter; a resumed run goes on in the same
    directory."""
    out = tmp_path / "ct"
    argv = ["simulate", "--epochs", "2", "--tensorboard", "--set", "record.alignment_every=20"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert main(["simulate", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"]) == 0
    ea, m = _events(out / "tensorboard"), open_run(out).metrics
    for v in ("train_error", "test_error", "free_steps", "clamped_passes"):
        events = ea.Scalars(v)
        assert [e.step for e in events] == [1, 2, 3], v
        assert [e.value for e in events] == pytest.approx(m[v].values.tolist(), rel=1e-6), v
    angles = [t for t in ea.Tags()["scalars"] if t.startswith("angle/")]
    assert sorted(angles) == ["angle/W1∠W2", "angle/W2∠W1"]
    assert [e.step for e in ea.Scalars("angle/W1∠W2")] == [1, 2, 3]
    assert "projections.ff1.weight" in ea.Tags()["histograms"]
    out = tmp_path / "fc"
    assert (
        main(["train", "--epochs", "1", "--tensorboard", "--out", str(out), "--no-progress"]) == 0
    )
    tags = _events(out / "tensorboard").Tags()["scalars"]
    assert {"test_exit_error/fc1", "test_exit_error/out", "train_loss/fc2"} <= set(tags)


def test_tensorboard_without_its_package_is_one_line(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    argv = ["train", "--epochs", "1", "--tensorboard", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        "ctsp: error: record.tensorboard needs the tensorboard package: pip install -e "
        "'.[tensorboard]'\n"
    )
    assert not (tmp_path / "r").exists()
