"""Sweeps: the spec and its trials (no Ray), then `ctsp sweep` on a local Ray (slow suite)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from ctsp.errors import ConfigError
from ctsp.sweeps import Trial, load_spec, open_sweep, status, summary

SPEC = """
command = "train"
seeds = 2
[set]
"train.epochs" = 3
[grid]
"train.lr" = [1e-3, 3e-3, -1.0]
"""


SEARCH = """
command = "train"
sample_seed = 3
[set]
"train.epochs" = 5
"data.validation" = 200
[random]
samples = 4
"train.lr" = { loguniform = [1e-5, 3e-3] }
[search]
algorithm = "optuna"
scheduler = "asha"
reduction_factor = 2
"""


VARIANTS = """
command = "train"
seeds = 2
[grid]
"train.lr" = [1e-3, 3e-3]
[variants]
plain = {}
deep = { "model.hidden" = [16, 16] }
big = { config = "fc-3x1000-fmnist", "data.name" = "digits" }
"""


def _spec(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def test_a_grid_over_seeds_is_every_combination_seeds_innermost(tmp_path):
    spec = load_spec(_spec(tmp_path))
    names = [t.name for t in spec.trials()]
    assert names == [f"train.lr={lr},seed={s}" for lr in ("0.001", "0.003", "-1") for s in (0, 1)]
    trial = spec.trials()[3]
    config = spec.config_of(trial, threads=1)
    assert (config.train.lr, config.seed, config.threads, config.train.epochs) == (3e-3, 1, 1, 3)


def test_random_draws_are_seeded_by_the_spec(tmp_path):
    text = SPEC + '[random]\nsamples = 3\n"model.dropout" = { uniform = [0.0, 0.5] }\n'
    a, b = (load_spec(_spec(tmp_path, text)).trials() for _ in range(2))
    assert [t.name for t in a] == [t.name for t in b] and len(a) == 3 * 3 * 2
    drops = {t.params["model.dropout"] for t in a}
    assert len(drops) == 3 and all(0.0 <= d <= 0.5 for d in drops)
    assert a[0].name.startswith("sample=0,train.lr=0.001,model.dropout=")


@pytest.mark.parametrize(
    "text, message",
    [
        ('command = "fit"', "command must be one of"),
        ('command = "train"\n[grid]\n"train.lrr" = [1]', "'train.lrr' is not a `ctsp train`"),
        ('command = "train"\n[grid]\n"seed" = [1, 2]', "swept by `seeds = N`"),
        ('command = "train"\n[grid]\n"train.lr" = []', "needs a non-empty list"),
        ('command = "train"\nseeds = 0', "seeds must be an integer >= 1"),
        ('command = "train"\n[random]\n"train.lr" = { normal = [0, 1] }', "needs samples = N"),
        (
            'command = "train"\n[random]\nsamples = 2\n"train.lr" = { normal = [0, 1] }',
            "unknown distribution|valid: uniform",
        ),
        ('command = "train"\nepochs = 3', "unknown key 'epochs'"),
        ('command = "train"\n[set]\n"train.epochs" = 0', "invalid value for train.epochs"),
        (
            SEARCH.replace('"optuna"', '"hyperopt"'),
            "invalid value for search.algorithm: 'hyperopt'",
        ),
        (
            SEARCH.replace('"asha"', '"pbt"'),
            "invalid value for search.scheduler: 'pbt'; valid: asha",
        ),
        (
            "seeds = 2\n" + SEARCH,
            "a search proposes settings of the \\[random\\] keys for one seed",
        ),
        (SEARCH + "grace_period = 0\n", "search.grace_period must be an integer >= 1"),
        (SEARCH + "max_t = 3\n", "unknown \\[search\\] key 'max_t'"),
        (SEARCH.replace('"data.validation" = 200', ""), "hold out data"),
        (VARIANTS.replace("deep =", '"a b" ='), "variant name 'a b'"),
        (VARIANTS.replace('"model.hidden"', '"model.hiden"'), "'model.hiden' is not a config"),
        (VARIANTS + '[set]\n"model.hidden" = [8]\n', "sets 'model.hidden', which the spec"),
        (VARIANTS.replace('config = "fc-3x1000-fmnist"', 'config = "nope"'), "nope"),
        (VARIANTS.replace("{}", "3"), "needs a table of config keys"),
        (SEARCH + "[variants]\nx = {}\n", "no \\[grid\\], \\[variants\\] or seeds"),
    ],
)
def test_a_bad_spec_is_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_spec(_spec(tmp_path, text))


def test_variants_are_one_swept_dimension_each_of_its_own_config_and_keys(tmp_path):
    """[variants]: named settings (a config and keys), swept like a grid key ("variant"),
    before the grid's keys; the [set] keys and the trial's apply on top of each variant's."""
    spec = load_spec(_spec(tmp_path, VARIANTS + '[set]\n"train.epochs" = 2\n'))
    assert spec.swept() == ["variant", "train.lr"] and len(spec.trials()) == 3 * 2 * 2
    names = [t.name for t in spec.trials()]
    assert names[:3] == [
        "variant=plain,train.lr=0.001,seed=0",
        "variant=plain,train.lr=0.001,seed=1",
        "variant=plain,train.lr=0.003,seed=0",
    ]
    configs = {t.name: spec.config_of(t) for t in spec.trials()}
    deep, big = (
        configs["variant=deep,train.lr=0.003,seed=1"],
        configs["variant=big,train.lr=0.001,seed=0"],
    )
    assert deep.model.hidden == (16, 16) and deep.train.lr == 3e-3 and deep.seed == 1
    assert big.name == "fc-3x1000-fmnist" and big.data.name == "digits" and big.train.epochs == 2
    assert configs["variant=plain,train.lr=0.001,seed=0"].model.hidden != (16, 16)


def test_a_sweep_of_variants_reads_back_with_the_variant_as_a_dimension(tmp_path):
    """open_sweep and the summary of a sweep of variants (trials' metrics written here: no
    Ray), the variant a dimension and a column."""
    from ctsp.sweeps.runner import TRIALS, prepare

    text = VARIANTS.replace('"train.lr" = [1e-3, 3e-3]', '"train.lr" = [1e-3]')
    spec, out = load_spec(_spec(tmp_path, text)), tmp_path / "out"
    prepare(spec, out)
    for k, trial in enumerate(spec.trials()):
        errors = np.array([0.5, 0.3]) - 0.01 * k
        ds = xr.Dataset({"test_error": ("epoch", errors), "val_error": ("epoch", errors[::-1])},
                        coords={"epoch": np.array([1, 2], dtype=np.int32)})  # fmt: skip
        (out / TRIALS / trial.name).mkdir(parents=True)
        ds.to_netcdf(out / TRIALS / trial.name / "metrics.nc", engine="scipy")
    ds = open_sweep(out)
    assert ds.test_error.dims == ("variant", "train.lr", "seed", "epoch")
    assert list(ds.variant.values) == ["plain", "deep", "big"]
    lines = summary(out)
    assert lines[2].startswith("| variant | train.lr |") and lines[4].startswith(
        "| plain | 0.001 |"
    )
    assert lines[6].startswith("| big | 0.001 | 25.50% | 45.50% | 0.71% | 2 |")


def test_a_search_sees_a_choice_as_the_index_of_its_values(tmp_path):
    """A search algorithm's categories cannot be lists (the hidden layers' widths, a layer's
    learning rates): it draws the index of a `choice`, and the trial gets the value."""
    pytest.importorskip("optuna")
    from ctsp.sweeps.search import _coded, _distributions

    lr = '"train.lr" = { loguniform = [1e-5, 3e-3] }'
    text = SEARCH.replace(lr, lr + '\n"model.hidden" = { choice = [[32, 32], [64]] }')
    spec = load_spec(_spec(tmp_path, text))
    params = {"train.lr": 1e-4, "model.hidden": [64]}
    assert _coded(spec, params, encode=True) == {"train.lr": 1e-4, "model.hidden": 1}
    assert _coded(spec, _coded(spec, params, encode=True), encode=False) == params
    dist, args = _distributions(spec)["model.hidden"]
    assert dist.optuna(*args).choices == (0, 1)


def test_asha_records_the_trials_it_stops_before_their_last_epoch(tmp_path):
    """The scheduler's decisions are Tune's ASHA; a STOP before the last epoch is recorded
    (so that a rerun does not resume the trial), the STOP at the last epoch is not."""
    pytest.importorskip("ray")
    from types import SimpleNamespace

    from ctsp.sweeps import METRIC, SCHEDULERS

    spec = load_spec(_spec(tmp_path, SEARCH))
    recorded = []
    asha = SCHEDULERS["asha"](spec, 4, lambda config, result: recorded.append(
        (config["name"], result["epoch"])))  # fmt: skip
    asha.set_search_properties(METRIC, "min")
    trials = [SimpleNamespace(trial_id=str(k), config={"name": f"t{k}"}) for k in range(3)]
    for trial in trials:
        asha.on_trial_add(None, trial)
    epoch = {"epoch": 1, "training_iteration": 1}
    decisions = [asha.on_trial_result(None, t, {**epoch, METRIC: v})
                 for t, v in zip(trials, [0.5, 0.2, 0.9], strict=True)]  # fmt: skip
    assert decisions == ["CONTINUE", "CONTINUE", "STOP"] and recorded == [("t2", 1)]
    last = {"epoch": 4, "training_iteration": 4, METRIC: 0.1}
    assert asha.on_trial_result(None, trials[1], last) == "STOP" and recorded == [("t2", 1)]


def test_a_trial_reports_each_epoch_once_with_the_lowest_validation_error_so_far(
    tmp_path, monkeypatch
):
    """The reporter of a trial's run: each epoch once, in order, whether the epochs come one by
    one or all at once (a resumed or finished trial); METRIC never looks ahead; a call with
    nothing new (the run's last line) reports nothing."""
    pytest.importorskip("ray")
    from ray import tune

    from ctsp.sweeps import METRIC
    from ctsp.sweeps.runner import _reporter

    reported = []
    monkeypatch.setattr(tune, "report", reported.append)

    def write(errors):
        epochs = np.arange(1, len(errors) + 1, dtype=np.int32)
        ds = xr.Dataset({"val_error": ("epoch", errors), "test_error": ("epoch", errors)},
                        coords={"epoch": epochs})  # fmt: skip
        ds.to_netcdf(tmp_path / "metrics.nc", engine="scipy")

    report = _reporter(tmp_path)
    report()  # no metrics yet
    write([0.3, 0.1, 0.2])
    report()
    report("the run's last line")
    write([0.3, 0.1, 0.2, 0.05])
    report()
    assert [(r["epoch"], r[METRIC]) for r in reported] == [(1, 0.3), (2, 0.1), (3, 0.1), (4, 0.05)]


# ---------------------------------------------------------------------------- on Ray (slow)


def _sweep(spec: Path, out: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ctsp", "sweep", str(spec), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen,
    )  # fmt: skip


def _without_timings(ds: xr.Dataset) -> xr.Dataset:
    return ds.drop_vars([v for v in ds.data_vars if v.endswith("_seconds")])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The spec's sweep, uninterrupted."""
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("sweep")
    proc = _sweep(_spec(root), root / "out")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()  # one line per failed trial, nothing else
    assert lines == [
        f"ctsp: warning: trial train.lr=-1,seed={s} failed: invalid value for train.lr: -1.0 "
        "(expected > 0)"
        for s in (0, 1)
    ], err
    assert "4 trials finished, 2 failed" in out
    return root / "out"


@pytest.mark.slow
def test_a_sweep_gives_one_dataset_with_the_swept_keys_and_seeds(finished):
    ds = open_sweep(finished)
    assert ds.test_error.dims == ("train.lr", "seed", "epoch")
    assert list(ds["train.lr"].values) == [1e-3, 3e-3]  # the failed value never ran an epoch
    assert list(ds.seed.values) == [0, 1] and list(ds.epoch.values) == [1, 2, 3]
    assert ds.test_exit_error.dims == ("train.lr", "seed", "epoch", "layer")
    assert not np.isnan(ds.test_error.values).any()
    one = xr.load_dataset(finished / "trials" / "train.lr=0.003,seed=1" / "metrics.nc")
    np.testing.assert_array_equal(ds.test_error.sel({"train.lr": 3e-3, "seed": 1}), one.test_error)
    lines = summary(finished)
    assert lines[4].startswith("| 0.001 | ") and lines[5].startswith("| 0.003 | ")
    assert "final epoch (no validation split)" in lines[0]
    assert lines[-3:] == ["2 trial(s) failed:"] + [
        f"- trial train.lr=-1,seed={s} failed: invalid value for train.lr: -1.0 (expected > 0)"
        for s in (0, 1)
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "ctsp", "sweep", str(finished), "--summary"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.splitlines()[2:] == lines[2:], proc.stderr
    assert (finished / "summary.md").is_file()
    assert (finished / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plot = subprocess.run(
        [sys.executable, "-m", "ctsp", "plot", str(finished), "--out", str(finished / "png")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plot.returncode == 0, plot.stderr
    names = [Path(p).name for p in plot.stdout.split()]
    assert names == ["errors.png", "exits.png", "summary.png"]
    import matplotlib.image

    for name in names:  # the curves are the mean ± sd over the seeds, a line per setting
        assert matplotlib.image.imread(finished / "png" / name).ndim == 3


def _wait_for_epochs(out: Path, proc: subprocess.Popen, epochs: int) -> None:
    """Until some trial has written ``epochs`` epochs (its metrics.nc), so that the sweep is
    caught with trials finished, running and not started."""
    t0 = time.monotonic()
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 300
        done = [
            xr.load_dataset(m).sizes["epoch"] for m in out.glob("trials/*/metrics.nc")
        ] if out.is_dir() else []  # fmt: skip
        if any(n >= epochs for n in done):
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_an_interrupted_sweep_run_again_ends_as_the_uninterrupted_one(finished, tmp_path):
    """SIGINT of the driver (one line, exit 130), then kill -9 of the driver: each rerun of
    the same command continues, and the last ends with the uninterrupted sweep's metrics."""
    spec, out = _spec(tmp_path), tmp_path / "out"
    proc = _sweep(spec, out)
    _wait_for_epochs(out, proc, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        f"ctsp: interrupted: the sweep in {out} stopped before every trial ended; run the same "
        "command again to continue it"
    )
    assert "pending" in status(load_spec(spec), out).values()
    proc = _sweep(spec, out, start_new_session=True)
    _wait_for_epochs(out, proc, 3)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    again = _sweep(spec, out)
    _, err = again.communicate(timeout=600)
    with contextlib.suppress(ProcessLookupError):  # what Ray left of the killed driver's
        os.killpg(proc.pid, signal.SIGKILL)
    assert again.returncode == 0, err
    xr.testing.assert_identical(
        _without_timings(open_sweep(out)), _without_timings(open_sweep(finished))
    )


@contextlib.contextmanager
def _ray_head(port: str, env: dict):
    """`ray start --head --block` in a session of its own, ended by signalling that session
    only (`ray stop` would end every Ray on the machine, a study's included)."""
    ray = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while True:
            assert head.poll() is None and time.monotonic() - t0 < 120, "ray start --head failed"
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                break
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(60)


@pytest.mark.slow
def test_the_bundled_sweep_on_a_ray_head_started_by_hand_equals_the_local_one(tmp_path):
    """`ray start --head` on 127.0.0.1 (loopback only: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    and the token authentication `ray start` sets up: RAY_AUTH_MODE=token), then `ctsp sweep
    digits-lr --address`: the trials' metrics are those of the sweep on a local Ray (started
    beside the head: a sweep without --address never joins a running Ray)."""
    pytest.importorskip("ray")
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
    port = "6391"
    argv = [sys.executable, "-m", "ctsp", "sweep", "digits-lr", "--out"]
    nobody = subprocess.run([*argv, str(tmp_path / "x"), "--address", f"127.0.0.1:{port}"],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert nobody.returncode == 1 and nobody.stderr.strip() == (
        f"ctsp: error: cannot join the Ray cluster at 127.0.0.1:{port}: nothing answers there "
        "(Connection refused); start one with `ray start --head`"
    )
    with _ray_head(port, env) as address:
        joined = subprocess.run([*argv, str(tmp_path / "cluster"), "--address", address],
                                env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        # without --address, a Ray of its own, not the head `ray start` left on the machine
        local = subprocess.run([*argv, str(tmp_path / "local")], capture_output=True, text=True,
                               timeout=600)  # fmt: skip
        assert local.returncode == 0, local.stderr
    xr.testing.assert_identical(
        _without_timings(open_sweep(tmp_path / "cluster")),
        _without_timings(open_sweep(tmp_path / "local")),
    )
    assert open_sweep(tmp_path / "local").val_error.dims == ("train.lr", "seed", "epoch")


def test_the_sweep_command_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    from ctsp.cli import main

    spec = _spec(tmp_path)
    cases = [
        (["sweep", str(spec)], "needs --out DIR"),
        (["sweep", "nope", "--out", str(tmp_path / "a")], "bundled specs: ct-baselines-digits"),
        (["sweep", str(tmp_path), "--summary"], "is not a sweep directory"),
    ]  # fmt: skip
    cases.append((["sweep", str(spec), "--out", str(tmp_path / "c")], "pip install -e '.[sweep]'"))
    for argv, message in cases:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, "ray", None)  # as if Ray were not installed
            assert main(argv) in (1, 2)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("ctsp: error: ") and message in err, err
    if importlib.util.find_spec("ray"):  # checked before Ray starts
        for argv, message in [
            (["--cpus", "99"], "--cpus must lie between --cpus-per-trial (1) and this machine's"),
            (["--cpus", "2", "--address", "127.0.0.1:1"], "--cpus sizes a local Ray"),
        ]:
            assert main(["sweep", str(spec), "--out", str(tmp_path / "d"), *argv]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]  # nothing written


@pytest.mark.slow
def test_a_sweep_in_parts_of_a_few_minutes_finishes_when_rerun(tmp_path):
    """--minutes: the trials stop when it is spent, the command exits 0 saying how many are to
    go, and the same command without it finishes the rest."""
    pytest.importorskip("ray")
    text = SPEC.replace('"train.epochs" = 3', '"train.epochs" = 150').replace(", -1.0]", "]")
    spec, out = _spec(tmp_path, text), tmp_path / "out"
    part = subprocess.run(
        [sys.executable, "-m", "ctsp", "sweep", str(spec), "--out", str(out), "--minutes", "0.25"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert part.returncode == 0, part.stderr
    states = status(load_spec(spec), out)
    assert "pending" in states.values(), states
    assert (
        part.stdout.strip()
        .splitlines()[-1]
        .endswith(
            f"{list(states.values()).count('pending')} to go: the 0.25 minutes are spent; run the "
            "same command again to continue it"
        )
    )
    rest = _sweep(spec, out)
    _, err = rest.communicate(timeout=600)
    assert rest.returncode == 0, err
    assert set(status(load_spec(spec), out).values()) == {"finished"}


@pytest.mark.slow
def test_a_search_resumes_the_interrupted_trials_and_keeps_the_stopped_ones(tmp_path):
    """Optuna proposes the trials, ASHA stops some: after SIGINT, the rerun proposes the
    interrupted trials again first (they resume from their checkpoints) until `samples` trials
    have ended; a stopped trial keeps its epochs and its record; a third run changes nothing."""
    pytest.importorskip("optuna")
    epochs = 20  # long enough for SIGINT to catch a trial running (about 0.3 s an epoch)
    text = SEARCH.replace('"train.epochs" = 5', f'"train.epochs" = {epochs}')
    spec_path, out = _spec(tmp_path, text), tmp_path / "out"
    proc = _sweep(spec_path, out)
    _wait_for_epochs(out, proc, 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    spec = load_spec(spec_path)
    before = status(spec, out)
    interrupted = [n for n, s in before.items() if s == "pending" and "=" in n]
    assert interrupted, before
    again = _sweep(spec_path, out)
    stdout, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    after = status(spec, out)
    assert len(after) == 4 and set(after.values()) <= {"finished", "stopped"}, after
    assert set(interrupted) <= set(after)  # proposed again, under the same names
    for name, state in after.items():
        record = out / "trials" / f"{name}.stopped"
        ran = xr.load_dataset(out / "trials" / name / "metrics.nc").sizes["epoch"]
        assert (ran < epochs) == (state == "stopped") == record.is_file(), (name, ran)
        if state == "stopped":  # (the trial may finish the epoch it was in when Tune stops it)
            line = record.read_text()
            assert line.startswith("stopped by asha after epoch "), line
            assert 1 <= int(line.split()[5]) <= ran, (line, ran)
    ds = open_sweep(out)
    assert ds.test_error.dims == ("sample", "seed", "epoch") and ds.sizes["sample"] == 4
    assert "train.lr" in ds.coords and ds["train.lr"].dims == ("sample",)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("trials/**/*") if p.is_file()}
    third = _sweep(spec_path, out)
    _, err = third.communicate(timeout=600)
    assert third.returncode == 0, err
    assert {p: p.stat().st_mtime_ns for p in out.glob("trials/**/*") if p.is_file()} == stamps


@pytest.mark.slow
def test_a_search_whose_trials_fail_ends_with_a_line_per_trial(tmp_path):
    """A failed trial reports no epoch: the search goes on (Tune would stop the whole sweep
    for a trial without the searched metric) and says so once per trial."""
    pytest.importorskip("optuna")
    text = SEARCH.replace("samples = 4", "samples = 2").replace(
        '"train.lr" = { loguniform = [1e-5, 3e-3] }', '"train.lr" = { uniform = [-2.0, -1.0] }'
    )
    proc = _sweep(_spec(tmp_path, text), tmp_path / "out")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(
        line.startswith("ctsp: warning: trial sample=") and "invalid value for train.lr" in line
        for line in lines
    ), err
    assert "0 trials finished, 2 failed" in out


def test_a_sweep_made_before_a_spec_key_existed_is_continued(tmp_path):
    """A sweep directory whose sweep.json lacks a key that specs gained later (``search``) is
    the same sweep: its rerun continues it; a different spec is still refused."""
    import json
    from dataclasses import asdict

    from ctsp.errors import RunDirError
    from ctsp.sweeps.runner import SPEC_FILE, prepare

    spec = load_spec(_spec(tmp_path))
    out = tmp_path / "out"
    prepare(spec, out)
    old = {k: v for k, v in asdict(spec).items() if k != "search"}
    (out / SPEC_FILE).write_text(json.dumps(old))
    prepare(spec, out)  # accepted, and written in today's form
    assert json.loads((out / SPEC_FILE).read_text()) == json.loads(json.dumps(asdict(spec)))
    other = load_spec(_spec(tmp_path, SPEC.replace("seeds = 2", "seeds = 3")))
    with pytest.raises(RunDirError, match="holds another sweep"):
        prepare(other, out)


def test_a_search_over_lists_reads_back_with_the_lists_as_text(tmp_path):
    """A searched key whose values are lists (the hidden layers' widths here, a layer's learning
    rates in the bundled search) becomes a coordinate of their text along ``sample``; the
    summary lists the validation error that selected each trial's epoch (no Ray: the trials'
    records and metrics are written here as a search leaves them)."""
    import json
    from dataclasses import asdict

    from ctsp.runs import metrics_dataset, save_netcdf
    from ctsp.sweeps.runner import prepare

    lr = '"train.lr" = { loguniform = [1e-5, 3e-3] }'
    text = SEARCH.replace(lr, lr + '\n"model.hidden" = { choice = [[32, 32], [64]] }')
    spec, out = load_spec(_spec(tmp_path, text)), tmp_path / "out"
    prepare(spec, out)
    for sample, (rate, hidden, val) in enumerate([(1e-3, [32, 32], 0.3), (2e-4, [64], 0.2)]):
        trial = Trial({"train.lr": rate, "model.hidden": hidden}, 0, sample)
        (out / "trials" / f"{trial.name}.json").write_text(json.dumps(asdict(trial)))
        rows = [{"epoch": e, "train_error": 0.5, "test_error": val + 0.01 * e,
                 "val_error": val + 0.1 * (e == 2)} for e in (1, 2)]  # fmt: skip
        (out / "trials" / trial.name).mkdir()
        config = spec.config_of(trial)
        save_netcdf(metrics_dataset(rows, config), out / "trials" / trial.name / "metrics.nc")
    ds = open_sweep(out)
    assert list(ds["model.hidden"].values) == ["[32,32]", "[64]"]
    assert ds["model.hidden"].dims == ("sample",) and ds.test_error.dims[0] == "sample"
    lines = summary(out)
    assert lines[2] == (  # the keys in the spec's order
        "| train.lr | model.hidden | validation error (mean) | test error (mean) | sd | seeds |"
    )
    assert lines[4:6] == [
        "| 0.001 | [32,32] | 30.00% | 31.00% | - | 1 |",  # selected: epoch 1
        "| 0.0002 | [64] | 20.00% | 21.00% | - | 1 |",
    ]
    # 2 of the spec's 5 epochs, and 2 of 4 proposals made: a table of unfinished work says so
    unfinished = lines[-5:]
    assert unfinished[0].startswith("4 trial(s) not finished (their epochs so far are in the")
    assert unfinished[3:] == ["- proposal 3 of 4", "- proposal 4 of 4"]
