"""Training on digits: learning, determinism, resume, divergence, run directory."""

import pytest
import torch
import xarray as xr

from ctsp import config as cfg
from ctsp.app import simulate
from ctsp.continuous import Trainer
from ctsp.errors import ConfigError, DivergenceError, RunDirError


def small(epochs=2, **train):
    return cfg.from_dict({"train": {"epochs": epochs, **train}})


def weights(path):
    return torch.load(path / "checkpoint.pt", weights_only=False)["model"]


@pytest.mark.slow
def test_default_run_learns_digits(tmp_path):
    """The no-argument run (`ctsp simulate`) reaches <= 4 % test error (chance is 90 %)."""
    result = simulate(cfg.RunConfig(), tmp_path / "run", progress=False, log=lambda s: None)
    m = result.metrics
    assert result.final_test_error <= 0.04, m.test_error.values
    assert float(m.test_error[0]) > result.final_test_error  # it learned during the run


def test_learning_within_a_few_epochs_and_run_directory(tmp_path):
    lines = []
    result = simulate(small(3), tmp_path / "run", progress=False, log=lines.append)
    assert result.final_test_error < 0.25  # chance: 0.9
    m = xr.open_dataset(result.path / "metrics.nc", engine="scipy")
    for v in ("train_error", "test_error", "epoch_seconds", "free_steps", "clamped_steps"):
        assert m[v].dims == ("epoch",) and m[v].shape == (3,)
    assert ((m.test_error >= 0) & (m.test_error <= 1)).all()
    assert list(m.epoch.values) == [1, 2, 3] and float(m.free_steps[0]) == 20
    assert cfg.load(result.path / "config.toml") == small(3)
    assert (result.path / "best.pt").is_file()
    assert len(lines) == 4 and lines[-1].startswith("final test error")
    assert not [p for p in result.path.iterdir() if p.name.endswith(".tmp")]


def test_seeded_runs_are_deterministic(tmp_path):
    a = simulate(small(1), tmp_path / "a", progress=False, log=lambda s: None)
    b = simulate(small(1), tmp_path / "b", progress=False, log=lambda s: None)
    for k, v in weights(a.path).items():
        assert torch.equal(v, weights(b.path)[k]), k


@pytest.mark.parametrize("extra", [{}, {"persistent": True, "symmetric": True}])
def test_resume_gives_the_same_weights(tmp_path, extra):
    quiet = {"progress": False, "log": lambda s: None}
    full = simulate(small(3, **extra), tmp_path / "full", **quiet)
    simulate(small(1, **extra), tmp_path / "part", **quiet)
    resumed = simulate(small(3, **extra), tmp_path / "part", resume=True, **quiet)
    for k, v in weights(full.path).items():
        assert torch.equal(v, weights(resumed.path)[k]), k
    assert resumed.metrics.test_error.values.tolist() == full.metrics.test_error.values.tolist()


@pytest.mark.slow
def test_schedule_decays_the_chl_rates_and_chunks_resume_exactly(tmp_path):
    """train.decay scales every Eq. 14 rate from its milestone on; a run trained in chunks
    (stop_after), with the decay added after the first chunk (before its milestone), ends
    bitwise equal to an uninterrupted run of the decayed config."""
    quiet = {"progress": False, "log": lambda s: None}
    decayed = {"decay": 0.1, "decay_at": [0.5]}  # 4 epochs: epochs 3 and 4 at rate x0.1
    config = small(4, **decayed)
    assert [config.train.lr_factor(e) for e in range(4)] == [1, 1, 0.1, 0.1]
    full = simulate(config, tmp_path / "full", **quiet)
    part = simulate(small(4), tmp_path / "part", stop_after=1, **quiet)  # no decay yet
    assert part.metrics.sizes["epoch"] == 1
    simulate(config, tmp_path / "part", resume=True, stop_after=2, **quiet)
    resumed = simulate(config, tmp_path / "part", resume=True, **quiet)
    for k, v in weights(full.path).items():
        assert torch.equal(v, weights(resumed.path)[k]), k
    plain = simulate(small(4), tmp_path / "plain", **quiet)  # the decay changed the run
    assert not torch.equal(
        weights(plain.path)["projections.input.weight"],
        weights(full.path)["projections.input.weight"],
    )
    with pytest.raises(RunDirError, match="schedule differs in epoch 2"):
        simulate(small(4, decay=0.1, decay_at=[0.25]), tmp_path / "part", resume=True, **quiet)


@pytest.mark.slow
def test_resume_with_more_epochs_keeps_the_schedule_it_was_planned_with(tmp_path):
    """`--epochs 2` then `--resume --epochs 4`: epochs 3-4 train at the last rate of the 2-epoch
    plan, bitwise as an uninterrupted run with train.schedule_epochs = 2."""
    quiet = {"progress": False, "log": lambda s: None}
    decayed = {"decay": 0.1, "decay_at": [0.5]}
    planned = small(4, schedule_epochs=2, **decayed)
    assert [planned.train.lr_factor(e) for e in range(4)] == [1, 0.1, 0.1, 0.1]
    full = simulate(planned, tmp_path / "full", **quiet)
    simulate(small(2, **decayed), tmp_path / "part", **quiet)
    lines = []
    resumed = simulate(
        small(4, **decayed), tmp_path / "part", resume=True, progress=False, log=lines.append
    )
    assert "epochs 3-4 train at the last rate of the 2-epoch" in lines[0]
    assert resumed.metrics.sizes["epoch"] == 4
    for k, v in weights(full.path).items():
        assert torch.equal(v, weights(resumed.path)[k]), k


def test_resume_refuses_a_different_config(tmp_path):
    simulate(small(1), tmp_path / "r", progress=False, log=lambda s: None)
    with pytest.raises(RunDirError, match=r"differs from the saved run in train\.beta, train\.lr"):
        simulate(small(2, beta=1.0, lr=[0.2, 0.1]), tmp_path / "r", resume=True, progress=False)
    with pytest.raises(RunDirError, match="no checkpoint.pt"):
        simulate(small(1), tmp_path / "empty", resume=True, progress=False)


@pytest.mark.slow
def test_max_sweeps_matters_to_a_resumed_run_only_under_steady(tmp_path):
    """solver.max_sweeps is read by "steady" alone: an Euler run resumes with another value
    (runs saved before the key existed), a steady run refuses it."""
    quiet = {"progress": False, "log": lambda s: None}
    simulate(small(1), tmp_path / "euler", **quiet)
    euler = cfg.from_dict({"train": {"epochs": 2}, "solver": {"max_sweeps": 9}})
    assert simulate(euler, tmp_path / "euler", resume=True, **quiet).metrics.sizes["epoch"] == 2
    steady = cfg.from_dict({"train": {"epochs": 1}, "solver": {"method": "steady"}})
    run = simulate(steady, tmp_path / "steady", **quiet)
    assert float(run.metrics.free_passes[0]) + float(run.metrics.clamped_passes[0]) == 15
    more = cfg.from_dict({"train": {"epochs": 2}, "solver": {"method": "steady", "max_sweeps": 4}})
    with pytest.raises(RunDirError, match=r"differs from the saved run in solver\.max_sweeps"):
        simulate(more, tmp_path / "steady", resume=True, progress=False)


def test_existing_output_is_refused_unless_force(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(
        RunDirError, match=r"exists and is not empty; overwrite it with --force \(force=True\)"
    ):
        simulate(small(1), out, progress=False)
    simulate(small(1), out, force=True, progress=False, log=lambda s: None)
    assert (out / "notes.txt").read_text() == "keep me"


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "r"
    simulate(small(1), out, progress=False, log=lambda s: None)
    good = weights(out)
    original = Trainer.train_batch
    calls = []

    def poisoned(self, *args):
        calls.append(1)
        if len(calls) == 5:
            self.net.projections["ff1"].weight.fill_(float("nan"))
        return original(self, *args)

    monkeypatch.setattr(Trainer, "train_batch", poisoned)
    with pytest.raises(
        DivergenceError,
        match=r"diverged: NaN or Inf .* \(epoch 2\); .* keeps the checkpoint of epoch 1$",
    ):
        simulate(small(2), out, resume=True, progress=False, log=lambda s: None)
    after = torch.load(out / "checkpoint.pt", weights_only=False)
    assert len(after["rows"]) == 1
    for k, v in good.items():
        assert torch.equal(v, after["model"][k])


def test_sizes_must_match_the_dataset(tmp_path):
    c = cfg.from_dict({"network": {"sizes": [784, 100, 10]}})
    with pytest.raises(ConfigError, match=r"do not match dataset digits: it has 64 input features"):
        simulate(c, tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_run_files_get_the_usual_permissions(tmp_path):
    import os

    result = simulate(small(1), tmp_path / "r", progress=False, log=lambda s: None)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("config.toml", "metrics.nc", "checkpoint.pt"):
        assert (result.path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name
