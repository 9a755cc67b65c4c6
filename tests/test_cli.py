"""The command line: exit codes and one-line messages."""

import re
import subprocess
import sys

import pytest

from ctsp import __version__
from ctsp.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_and_version():
    for argv in (["--help"], ["simulate", "--help"], ["data", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    proc = subprocess.run(
        [sys.executable, "-m", "ctsp", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"ctsp {__version__}"


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (
            ["simulate", "--dataset", "imagenet"],
            2,
            "invalid value for data.name: 'imagenet'; valid: digits",
        ),
        (
            ["simulate", "--solver", "leapfrog"],
            2,
            "invalid value for solver.method: 'leapfrog'; valid: euler",
        ),
        (["simulate", "--set", "train.lrr=1"], 2, "unknown config key 'train.lrr'"),
        (
            ["simulate", "--set", "network.rate=relu"],
            2,
            "network.rate: 'relu'; valid: hard_sigmoid",
        ),
        (["simulate", "--epochs", "0"], 2, "invalid value for train.epochs: 0"),
        (["simulate", "--dataset", "fashion-mnist"], 2, "do not match dataset fashion-mnist"),
        (["simulate", "nope.toml"], 2, "neither a file nor a bundled config"),
        (["simulate", "--device", "cuda"], 2, "CUDA is not available"),
        (["simulate", "--stop-after", "0"], 2, "--stop-after must be at least 1"),
        (["train", "--stop-after", "-1"], 2, "--stop-after must be at least 1"),
        (["data", "check", "imagenet"], 2, "unknown dataset 'imagenet'"),
        (["train", "--set", "train.precision=float16"], 2, '"float16" needs device = "cuda"'),
        (
            ["simulate", "--dataset", "fashion-mnist", "--data-dir", "nowhere"],
            2,
            "--data-dir nowhere does not hold the fashion-mnist data",
        ),
    ],
)
def test_bad_input_one_line_and_exit_code(capsys, argv, code, message, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    got, out, err = run(capsys, *argv)
    assert got == code
    assert err.startswith("ctsp: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_simulate_writes_a_run_and_refuses_to_overwrite(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "simulate", "--epochs", "1", "--out", str(out), "--no-progress")
    assert code == 0 and "epoch   1/1" in stdout and "final test error" in stdout
    assert {"config.toml", "metrics.nc", "checkpoint.pt", "best.pt"} <= {
        p.name for p in out.iterdir()
    }
    code, _, err = run(capsys, "simulate", "--epochs", "1", "--out", str(out))
    assert code == 2 and "exists and is not empty; overwrite it with --force" in err
    code, _, err = run(capsys, "simulate", "--out", str(out), "--resume", "--beta", "2")
    assert code == 2 and "differs from the saved run in train.beta" in err
    code, stdout, _ = run(
        capsys, "simulate", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"
    )
    assert code == 0 and "epoch   2/2" in stdout and "epoch   1/" not in stdout


def test_divergence_exits_1(capsys, tmp_path):
    """Euler with step 5 on the unbounded sigmoid model is unstable (|1 - 5| > 1): it blows up."""
    code, _, err = run(
        capsys,
        "simulate",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "r"),
        "--set",
        "network.rate=sigmoid",
        "--set",
        "solver.step=5.0",
        "--set",
        "solver.free_duration=2000.0",
        "--no-progress",
    )
    assert code == 1 and "diverged" in err and err.count("\n") == 1


def test_print_config_is_rerunnable(capsys, tmp_path):
    code, text, _ = run(capsys, "simulate", "fmnist-2x1500", "--epochs", "3", "--print-config")
    assert code == 0 and "epochs = 3" in text
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, again, _ = run(capsys, "simulate", str(path), "--print-config")
    assert again == text


def test_data_list_and_check(capsys):
    code, out, _ = run(capsys, "data", "list")
    assert code == 0
    assert "fashion-mnist  found in /usr/share/datasets/fashion-mnist" in out
    assert "digits" in out and "embedded" in out
    code, out, _ = run(capsys, "data", "check", "fashion-mnist", "--no-download")
    assert code == 0 and "train 60000, test 10000" in out


def test_configs_lists_each_bundled_config_with_its_dataset_network_epochs_and_time(capsys):
    code, out, _ = run(capsys, "configs")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert {"fmnist-2x1500", "fmnist-3x1500", "mnist-2x1500", "mnist-3x1500"} <= set(lines)
    assert re.match(
        r"fmnist-2x1500 +fashion-mnist +784-1500-1500-10, loop fixed +60 +\d+(\.\d)? (s|min|h)$",
        lines["fmnist-2x1500"],
    ), lines["fmnist-2x1500"]
    assert re.match(
        r"vgg8b-fmnist +fashion-mnist +vgg8b x1, fc 1024, sigprop +100 +\d", lines["vgg8b-fmnist"]
    )
    assert lines["digits-lr"] == "digits-lr  train  train.lr  2 seeds  4 trials"  # ctsp sweep
    assert lines["fmnist-2x1500-search"].endswith("1 seeds  16 trials proposed by optuna")
    assert out.startswith("est. time: benchmarks/config_times.py on x86_64")  # times.json


def test_a_locked_run_directory_is_refused_with_the_holders_pid(capsys, tmp_path):
    """Two runs on one --out: the second (here --force, which would clear the first's files)
    is refused while the first holds the directory's lock; afterwards the lock is gone."""
    import os

    from ctsp.runs import run_directory

    out = tmp_path / "run"
    with run_directory(out, "first"):
        for extra in (["--force"], ["--resume"], []):
            got, _, err = run(capsys, "simulate", "--epochs", "1", "--out", str(out), *extra)
            assert got == 2 and err.count("\n") == 1
            assert f"in use by another ctsp run (PID {os.getpid()})" in err
    assert not (out / ".lock").exists()
    assert run(capsys, "simulate", "--epochs", "1", "--out", str(out), "--no-progress")[0] == 0


@pytest.mark.slow
def test_sigterm_ends_the_run_with_one_line_and_exit_143(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ctsp", "simulate", "--epochs", "30", "--out", str(out)]
    proc = subprocess.Popen([*cmd, "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    line = proc.stdout.readline()  # the first epoch's line: the run is in its epoch loop
    assert line.startswith("epoch   1/30"), line
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    (message,) = err.strip().splitlines()
    assert re.fullmatch(
        rf"ctsp: interrupted: {re.escape(str(out))} keeps the checkpoint of epoch (\d+): "
        rf"continue with --out {re.escape(str(out))} --resume",
        message,
    ), message
    assert (out / "checkpoint.pt").is_file() and not (out / ".lock").exists()
