"""Trajectory recording: Dataset layout, netCDF round trip, final states, resume, bad input,
failed writes, analysis, figures and the tutorial (docs/trajectories.md)."""

import errno
import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from analysis.recording import FILENAME, TrajectoryRecorder, combine, record
from analysis.trajectories import (
    convergence_time,
    open_trajectories,
    phase_end,
    plot_epochs,
    plot_population,
    plot_residual,
    population_summary,
    settling_time,
)
from ctsp import config as cfg
from ctsp import data as datasets
from ctsp.app import build_layered_network as build_network
from ctsp.app import build_recorders, simulate
from ctsp.cli import main
from ctsp.continuous import Field, RelaxSpec, Trainer, relax, relaxation_dataset
from ctsp.errors import WriteError
from ctsp.runs import save_netcdf
from models import LayeredNetwork

ROOT = Path(__file__).resolve().parents[1]
QUIET = {"progress": False, "log": lambda line: None}


def recording(epochs=2, **rec):
    return cfg.from_dict({"train": {"epochs": epochs}, "record": {"trajectories": 4, **rec}})


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits):
    """A 2-epoch digits run recording 4 test samples after each epoch, and its recorder."""
    config = recording(trajectory_epochs=1)
    recorder = TrajectoryRecorder(config, digits)
    result = simulate(config, tmp_path_factory.mktemp("run") / "r", recorders=[recorder], **QUIET)
    return config, recorder, result


def test_relaxation_to_xarray():
    torch.manual_seed(0)
    net = LayeredNetwork([6, 5, 4, 3])
    x = torch.rand(2, 6)
    spec = RelaxSpec(duration=3.0, record_every=2)
    r = relax(Field(net, net.input_current(x)), net.zero_state(2), spec)
    pops = dict(zip(net.population_names, net.populations, strict=True))
    ds = relaxation_dataset(r, pops, phase="free", samples=[7, 9], labels=torch.tensor([1, 2]))
    assert list(ds.data_vars)[:3] == ["h1", "h2", "out"]
    assert ds.h2.dims == ("time", "sample", "neuron_h2") and ds.h2.shape == (4, 2, 4)
    assert ds.residual.dims == ("time", "sample")
    assert ds.time.values.tolist() == [0.0, 1.0, 2.0, 3.0] and float(ds.end_time) == 3.0
    assert ds.sample.values.tolist() == [7, 9] and ds.label.values.tolist() == [1, 2]
    assert str(ds.phase.values) == "free" and int(ds.steps) == 6
    np.testing.assert_array_equal(ds.out.isel(time=-1).values, r.state[:, net.output].numpy())
    whole = relaxation_dataset(r)
    assert whole.state.dims == ("time", "sample", "neuron") and whole.state.shape == (4, 2, 12)
    with pytest.raises(ValueError, match="record_every"):
        plain = relax(
            Field(net, net.input_current(x)), net.zero_state(2), spec.but(record_every=None)
        )
        relaxation_dataset(plain)


def test_run_writes_the_dataset_and_it_round_trips(run, digits):
    config, recorder, result = run
    ds = combine(recorder.recordings)
    with xr.open_dataset(result.path / FILENAME, engine="scipy") as back:
        xr.testing.assert_identical(back.load(), ds)
    assert ds.h1.dims == ("epoch", "phase", "time", "sample", "neuron_h1")
    assert ds.h1.shape == (2, 2, 21, 4, 256) and ds.out.shape[-1] == 10
    assert ds.residual.dims == ("epoch", "phase", "time", "sample")
    assert ds.phase.values.tolist() == ["free", "clamped"]
    assert ds.epoch.values.tolist() == [1, 2] and ds.sample.values.tolist() == [0, 1, 2, 3]
    assert ds.label.values.tolist() == digits.test_y[:4].tolist()
    assert ds.time.values[-1] == 10.0 and ds.end_time.values.tolist() == [[10.0, 2.0]] * 2
    clamped = ds.residual.sel(phase="clamped")
    assert clamped.sel(time=slice(0, 2)).notnull().all() and clamped.sel(time=2.5).isnull().all()
    assert cfg.from_dict(json.loads(ds.attrs["config"])) == config
    assert ds.attrs["solver"] == "euler" and ds.attrs["solver_step"] == 0.5
    assert ds.time.attrs["units"].startswith("r") and "units" in ds.h1.attrs
    assert not [p for p in result.path.iterdir() if p.name.endswith(".tmp")]


def test_recorded_end_of_each_phase_is_the_solvers_final_state(run, digits):
    """After training: the state at each phase's end_time is what the solver ends the phase
    with (the free phase as the trainer runs it, without recording; then the clamped phase)."""
    config, recorder, result = run
    ds = combine(recorder.recordings).sel(epoch=2)
    trainer = Trainer(result.network, config, torch.device("cpu"), 1)
    x, y = digits.test_x[:4], digits.test_y[:4]
    with torch.no_grad():
        current, free = trainer.free_phase(x)
        target = torch.nn.functional.one_hot(y, 10).float()
        clamped = trainer.relax_phase(current, free.state, 0.5, target, trainer.clamped_spec)
    net = result.network
    for phase, final in (("free", free.state), ("clamped", clamped.state)):
        for name, cols in zip(net.population_names, net.populations, strict=True):
            got = phase_end(ds, name).sel(phase=phase).values
            np.testing.assert_array_equal(got, final[:, cols].numpy(), err_msg=f"{phase} {name}")


def test_a_steady_run_records_with_euler(digits):
    """ "steady" has no time axis: the recorder integrates the recorded samples with projected
    Euler over the phase durations and says so in the attrs; the Euler free phase of a trained
    network ends near the swept fixed point."""
    config = cfg.from_dict(
        {
            "solver": {"method": "steady", "tol": 1e-4, "max_sweeps": 50},
            "record": {"trajectories": 3},
        }
    )
    trainer = Trainer(build_network(config), config, torch.device("cpu"), 1)
    ds = record(trainer, digits.test_x[:3], digits.test_y[:3])
    assert ds.attrs["solver"] == "euler" and ds.attrs["training_solver"] == "steady"
    assert ds.end_time.values.tolist() == [10.0, 2.0]
    with torch.no_grad():
        _, swept = trainer.free_phase(digits.test_x[:3])
    assert swept.stats.converged
    end = phase_end(ds, "h1").sel(phase="free").values
    np.testing.assert_allclose(end, swept.state[:, trainer.net.populations[0]].numpy(), atol=0.05)


@pytest.mark.parametrize("solver", [{"tol": 0.05}, {"step": 0.3}, {"method": "rk4"}])
def test_last_point_is_the_final_state_for_any_grid(digits, solver):
    """Early stop (tol), a step that does not divide the durations, another method; stride 3.
    Without early stop the recorded phases end where the unrecorded (training) phases end; with
    it, where the solver stops when checking every ``stride`` steps."""
    config = cfg.from_dict({"solver": solver, "record": {"trajectories": 3, "stride": 3}})
    trainer = Trainer(build_network(config), config, torch.device("cpu"), 1)
    net = trainer.net
    x, y = digits.test_x[:3], digits.test_y[:3]
    ds = record(trainer, x, y, stride=3)
    every = 3 if config.solver.tol > 0 else None
    free_spec, clamped_spec = (s.but(record_every=every) for s in RelaxSpec.phases(config.solver))
    with torch.no_grad():
        current = net.input_current(x)
        free = trainer.relax_phase(current, net.zero_state(3), 0.0, None, free_spec)
        target = torch.nn.functional.one_hot(y, 10).float()
        clamped = trainer.relax_phase(current, free.state, 0.5, target, clamped_spec)
    for phase, final in (("free", free), ("clamped", clamped)):
        end = float(ds.end_time.sel(phase=phase))
        assert end == pytest.approx(final.stats.time)
        for name, cols in zip(net.population_names, net.populations, strict=True):
            got = phase_end(ds, name).sel(phase=phase).values
            np.testing.assert_array_equal(got, final.state[:, cols].numpy(), err_msg=name)
        recorded = ds.residual.sel(phase=phase).dropna("time", how="all")
        assert float(recorded.time[-1]) == end
        assert ds.residual.sel(phase=phase, time=slice(end + 1e-9, None)).isnull().all()
    if config.solver.tol > 0:
        assert float(ds.end_time.sel(phase="free")) < 10.0  # stopped early, NaN after


def test_time_is_in_units_of_the_neuron_time_constant(digits):
    config = cfg.from_dict({"network": {"tau": 2.0}})
    trainer = Trainer(build_network(config), config, torch.device("cpu"), 1)
    ds = record(trainer, digits.test_x[:2], digits.test_y[:2])
    assert ds.end_time.values.tolist() == [5.0, 1.0]  # 10 and 2 solver time units
    with torch.no_grad():
        field = Field(trainer.net, trainer.net.input_current(digits.test_x[:2]))
        start = field.residual(trainer.net.zero_state(2))
    np.testing.assert_allclose(ds.residual.sel(phase="free").values[0], 2 * start.numpy())


def test_resume_keeps_the_earlier_epochs(tmp_path):
    config = recording(2, trajectory_epochs=1)
    simulate(config, tmp_path / "full", **QUIET)
    simulate(recording(1, trajectory_epochs=1), tmp_path / "part", **QUIET)
    simulate(config, tmp_path / "part", resume=True, **QUIET)
    full = open_trajectories(tmp_path / "full")
    resumed = open_trajectories(tmp_path / "part")
    assert resumed.epoch.values.tolist() == [1, 2]
    xr.testing.assert_identical(resumed, full)


def test_epochs_with_different_specs_combine(digits, tmp_path):
    """As after a resume that changed record.*: more samples, fewer populations, another stride."""
    config = cfg.RunConfig()
    trainer = Trainer(build_network(config), config, torch.device("cpu"), 1)
    x, y = digits.test_x, digits.test_y
    a = record(trainer, x[:2], y[:2], epoch=1)
    b = record(trainer, x[:3], y[:3], populations=("out",), stride=4, epoch=2)
    ds = combine([a, b])
    assert ds.label.dims == ("sample",) and ds.label.values.tolist() == y[:3].tolist()
    assert ds.h1.sel(epoch=2).isnull().all() and ds.h1.sel(epoch=1, sample=2).isnull().all()
    assert ds.out.sel(epoch=2, sample=2).notnull().any()
    assert float(ds.end_time.sel(epoch=2, phase="clamped")) == 2.0
    save_netcdf(ds, tmp_path / FILENAME)
    xr.testing.assert_identical(open_trajectories(tmp_path), ds)


def test_recording_switched_on_at_resume_and_off_by_default(tmp_path, digits):
    assert build_recorders(cfg.RunConfig(), digits) == []
    simulate(recording(1, trajectories=0), tmp_path / "r", **QUIET)
    assert not (tmp_path / "r" / FILENAME).exists()
    simulate(recording(2, trajectory_epochs=0), tmp_path / "r", resume=True, **QUIET)
    assert int(open_trajectories(tmp_path / "r").epoch) == 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--record", "360"], "record.trajectories=360 is larger than the test set of digits (359"),
        (
            ["--record", "2", "--set", 'record.populations=["h1", "h3"]'],
            "unknown population 'h3' in record.populations; valid: h1, out or all",
        ),
        (
            ["--record", "2", "--set", "record.stride=5"],
            "record.stride=5 gives an empty time grid in the clamped phase: it has 4 solver steps",
        ),
    ],
)
def test_bad_recording_specs_fail_before_training(capsys, tmp_path, argv, message):
    out = tmp_path / "r"
    code = main(["simulate", "--out", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("ctsp: error: ") and message in err
    assert err.count("\n") == 1 and not out.exists()


def test_record_flag_sets_the_config(capsys):
    assert main(["simulate", "--record", "5", "--print-config"]) == 0
    assert "trajectories = 5" in capsys.readouterr().out


def full_disk(self, path, *args, **kwargs):
    Path(path).write_bytes(b"CDF\x01 partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """The disk fills up as the recorder writes (after metrics.nc, which recorders may read)."""
    out = tmp_path / "r"
    real = xr.Dataset.to_netcdf

    def trajectories_fail(self, path, *args, **kwargs):
        if Path(path).name.startswith(f".{FILENAME}."):
            return full_disk(self, path)
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_netcdf", trajectories_fail)
    code = main(["simulate", "--epochs", "1", "--record", "2", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err == (
        f"ctsp: error: cannot write {out / FILENAME}: No space left on device; {out} keeps the "
        "checkpoint of the start (no epoch trained yet)\n"
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.name == FILENAME]


def test_failed_writes_keep_the_earlier_file(tmp_path, digits, monkeypatch):
    config = recording(1, trajectory_epochs=1)
    recorder = TrajectoryRecorder(config, digits)
    trainer = Trainer(build_network(config), config, torch.device("cpu"), 1)
    recorder.after_epoch(trainer, 1, tmp_path, last=False)
    before = (tmp_path / FILENAME).read_bytes()
    with monkeypatch.context() as m:
        m.setattr(xr.Dataset, "to_netcdf", full_disk)
        with pytest.raises(WriteError, match=rf"cannot write {re.escape(str(tmp_path))}/\S+nc: No"):
            recorder.after_epoch(trainer, 2, tmp_path, last=True)
    assert (tmp_path / FILENAME).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]
    blocker = tmp_path / "file"  # an unwritable directory: a file stands where it should be
    blocker.write_text("not a directory")
    with pytest.raises(WriteError, match=rf"cannot write {re.escape(str(blocker / FILENAME))}: "):
        recorder.after_epoch(trainer, 1, blocker, last=True)


def synthetic() -> xr.Dataset:
    """Two phases, two samples, residuals chosen by hand; time 0..4, the clamped phase ends at 2."""
    nan = np.nan
    res = np.array(
        [
            [[1.0, 1.0], [0.5, 0.01], [0.001, 0.5], [0.0001, 0.001], [0.0, 0.5]],
            [[1.0, 0.1], [0.0001, 0.1], [0.0001, 0.1], [nan, nan], [nan, nan]],
        ]
    )
    out = np.zeros((2, 5, 2, 2))
    out[0, :, 0, 0] = [0.0, 0.5, 0.9, 0.99, 1.0]  # settles within 0.1 of 1.0 at t = 2
    out[1, 3:] = nan
    return xr.Dataset(
        {
            "out": (("phase", "time", "sample", "neuron_out"), out),
            "residual": (("phase", "time", "sample"), res),
            "end_time": ("phase", [4.0, 2.0]),
        },
        coords={"phase": ["free", "clamped"], "time": np.arange(5.0), "sample": [0, 1]},
    )


def test_convergence_and_settling_times():
    ds = synthetic()
    conv = convergence_time(ds, tol=0.01)
    assert conv.dims == ("phase", "sample")
    # free: sample 0 is below 0.01 from t = 2 on; sample 1 rises again at t = 4 -> never
    # clamped: sample 0 from t = 1 (the NaN padding after its end does not count); 1 never
    np.testing.assert_array_equal(conv.values, [[2.0, np.nan], [1.0, np.nan]])
    settle = settling_time(ds, "out", tol=0.1)
    np.testing.assert_array_equal(settle.values, [[2.0, 0.0], [0.0, 0.0]])
    summary = population_summary(ds, tol=0.1)
    assert summary.population.values.tolist() == ["out"]
    assert float(summary.movement.sel(population="out", phase="free", sample=0)) == 0.5
    assert float(summary.mean_state.sel(population="out", phase="free", sample=0)) == 0.5


def test_analysis_of_a_run(run):
    ds = open_trajectories(run[2].path)
    conv = convergence_time(ds)
    assert conv.dims == ("epoch", "phase", "sample")
    assert float(conv.sel(phase="free").max()) <= 10.0  # trained a little: converges in 10 r
    summary = population_summary(ds)
    assert summary.settling_time.dims == ("population", "epoch", "phase", "sample")
    assert (summary.movement.sel(phase="free") > 0).all()
    assert plot_population(ds, "out", sample=1).get_title().startswith("out: 10 of 10 neurons")
    assert plot_residual(ds, tol=1e-3).get_yscale() == "log"
    assert len(plot_epochs(ds)) == 2


def test_figures_script_writes_pngs(run, tmp_path, monkeypatch, capsys):
    figures = tmp_path / "figs"
    monkeypatch.setattr(sys, "argv", ["trajectories.py", str(run[2].path), "--out", str(figures)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "figures" / "trajectories.py"), run_name="__main__")
    assert e.value.code == 0
    pngs = sorted(p.name for p in figures.glob("*.png"))
    assert pngs[0] == "epochs.png" and pngs[1].startswith("relaxation_sample") and len(pngs) == 3
    for p in figures.glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 20_000


def blocks(markdown: str) -> list[tuple[str, str]]:
    return re.findall(r"```(\w+)\n(.*?)```", markdown, flags=re.S)


def test_tutorial_runs_as_written(tmp_path, monkeypatch, capsys):
    """Every block of docs/trajectories.md, in order, in an empty directory: the shell lines
    (``ctsp ...``, ``python figures/...``) by their entry points, the Python in one namespace."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    found = blocks((ROOT / "docs" / "trajectories.md").read_text())
    assert [lang for lang, _ in found].count("python") >= 4
    for lang, code in found:
        if lang == "python":
            exec(compile(code, "docs/trajectories.md", "exec"), namespace)
            continue
        assert lang == "bash"
        for line in filter(None, (ln.strip() for ln in code.splitlines())):
            argv = shlex.split(line)
            if argv[0] == "ctsp":
                assert main(argv[1:]) == 0, line
            else:
                assert argv[:2] == ["python", "figures/trajectories.py"], line
                monkeypatch.setattr(sys, "argv", argv[1:])
                with pytest.raises(SystemExit) as e:
                    runpy.run_path(str(ROOT / argv[1]), run_name="__main__")
                assert e.value.code == 0, line
    for png in ("out_sample0.png", "h1_sample0.png", "residual.png", "epochs.png"):
        assert (tmp_path / png).is_file(), png
    assert (tmp_path / "runs" / "traj" / "figures" / "epochs.png").is_file()
