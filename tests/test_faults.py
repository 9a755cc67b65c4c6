"""Bad inputs and faults, run as a user runs them: `ctsp` in a subprocess.

Each case gives one line on stderr (``ctsp: error: ...``, ``ctsp: interrupted: ...`` or
``ctsp: warning: ...``), the documented exit code (2 bad input, 1 a run that failed, 130/143
interrupted) and no traceback, and no data is lost: a run directory that held a run still
resumes. The cases run two at a time (each process spends ~4 s importing torch); the faults
that need timing (signals, kill -9, a lock held by a live run) run one by one below.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

FASHION = Path("/usr/share/datasets/fashion-mnist")
QUICK = ["--epochs", "1", "--no-progress"]


def ctsp(*argv, cwd: Path, env: dict | None = None, limit_file_size: int | None = None):
    """Run ``ctsp argv`` as a user would; the CompletedProcess."""

    def limit() -> None:  # a full disk: writes past this size fail with EFBIG, not a signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "ctsp", *map(str, argv)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit if limit_file_size else None,
    )


@dataclass
class Case:
    """``argv`` (``{tmp}`` is the case's directory; ``{run}`` a finished 1-epoch run copied
    there), the exit code and a fragment of the one stderr line."""

    argv: list[str]
    code: int
    message: str
    setup: str = ""  # a name in SETUPS
    prefix: str = "ctsp: error: "
    env: dict = field(default_factory=dict)
    limit_file_size: int | None = None
    keeps_run: bool = False  # {run} must still resume afterwards


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _drop_entry(checkpoint: Path, entry: str) -> None:
    ckpt = torch.load(checkpoint, weights_only=False)
    del ckpt[entry]
    torch.save(ckpt, checkpoint)


SETUPS = {
    "binary": lambda d: _write(d / "binary.toml", bytes(range(256)) * 4),
    "random-checkpoint": lambda d: _write(d / "run" / "checkpoint.pt", os.urandom(5000)),
    "truncated-checkpoint": lambda d: _write(
        d / "run" / "checkpoint.pt", (d / "run" / "checkpoint.pt").read_bytes()[:3000]
    ),
    "bad-toml": lambda d: _write(d / "bad.toml", b"[train\nepochs = 3\n"),
    "wrong-key-toml": lambda d: _write(d / "key.toml", b"[train]\nepoch = 3\n"),
    "empty-dir": lambda d: (d / "empty").mkdir(),
    "incomplete-dir": lambda d: (
        (d / "part").mkdir() or shutil.copy(FASHION / "train-images-idx3-ubyte.gz", d / "part")
    ),
    "corrupt-data": lambda d: (
        shutil.copytree(FASHION, d / "fm")
        and _write(
            d / "fm" / "t10k-labels-idx1-ubyte.gz",
            (FASHION / "t10k-labels-idx1-ubyte.gz").read_bytes()[:-100],
        )
    ),
    "notes": lambda d: (d / "full").mkdir() or _write(d / "full" / "notes.txt", b"keep me"),
    "no-rows": lambda d: _drop_entry(d / "run" / "checkpoint.pt", "rows"),
    "no-model": lambda d: _drop_entry(d / "run" / "checkpoint.pt", "model"),
    "file-in-the-way": lambda d: _write(d / "afile", b"not a directory"),
}

CASES = {
    # configs and flags
    "unknown key": Case(["simulate", "--set", "train.lrr=1"], 2, "unknown config key 'train.lrr'"),
    "unknown key in a file": Case(
        ["simulate", "{tmp}/key.toml"], 2, "train.epoch", "wrong-key-toml"
    ),
    "bad TOML": Case(["simulate", "{tmp}/bad.toml"], 2, "bad.toml", "bad-toml"),
    "binary config": Case(["simulate", "{tmp}/binary.toml"], 2, "binary.toml", "binary"),
    "checkpoint as config": Case(["simulate", "{run}/checkpoint.pt"], 2, "checkpoint.pt"),
    "missing config": Case(["simulate", "nope.toml"], 2, "neither a file nor a bundled config"),
    "no '=' in --set": Case(["simulate", "--set", "train.lr"], 2, "train.lr"),
    "wrong type": Case(["simulate", "--set", "train.beta=big"], 2, "train.beta"),
    "huge seed": Case(["simulate", "--seed", "99999999999999999999"], 2, "seed"),
    "infinite duration": Case(
        ["simulate", "--set", "solver.free_duration=inf"], 2, "solver.free_duration"
    ),
    "nan beta": Case(["simulate", "--beta", "nan"], 2, "train.beta"),
    "zero epochs": Case(["simulate", "--epochs", "0"], 2, "train.epochs"),
    "stop after 0": Case(["simulate", "--stop-after", "0"], 2, "--stop-after must be at least 1"),
    "cuda without a GPU": Case(["simulate", "--device", "cuda"], 2, "CUDA is not available"),
    "float16 on a discrete net": Case(["train", "--set", "train.precision=float16"], 2, "cuda"),
    "float16 on the CPU": Case(
        ["train", "snn-fmnist-sp-voltage", "--set", "train.precision=float16"], 2, "cuda"
    ),
    "unknown solver": Case(["simulate", "--solver", "leapfrog"], 2, "valid: euler"),
    "unknown rule": Case(["train", "--set", "train.rule=magic"], 2, "train.rule"),
    "a phase of 2e7 steps": Case(
        ["simulate", "--set", "solver.free_duration=1e7"], 2, "more than solver.max_steps"
    ),
    "a name that leaves runs/": Case(
        ["simulate", *QUICK, "--name", "../../escape"], 2, "a non-empty name without '/'"
    ),
    "more threads than cores": Case(
        ["simulate", *QUICK, "--threads", "1000"], 2, "invalid value for threads: 1000"
    ),
    # the environment
    "hang timeout nan": Case(
        ["train", *QUICK], 2, "CTSP_HANG_TIMEOUT: 'nan'", env={"CTSP_HANG_TIMEOUT": "nan"}
    ),
    "hang timeout of a millisecond": Case(
        ["train", *QUICK],
        2,
        "(expected a number of seconds >= 3)",
        env={"CTSP_HANG_TIMEOUT": "0.001"},
    ),
    "debug neither on nor off": Case(["configs"], 2, "CTSP_DEBUG", env={"CTSP_DEBUG": "maybe"}),
    "a rank that is no number": Case(["train", *QUICK], 2, "RANK: 'first'", env={"RANK": "first"}),
    "CTSP_DATA not a directory": Case(
        ["train", *QUICK, "--dataset", "fashion-mnist"],
        2,
        "CTSP_DATA",
        env={"CTSP_DATA": "/nonexistent"},
    ),
    # data
    "unknown dataset": Case(["simulate", "--dataset", "imagenet"], 2, "valid: digits"),
    "data dir missing": Case(
        ["train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/nowhere"],
        2,
        "does not hold the fashion-mnist data",
    ),
    "data dir empty": Case(
        ["train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/empty"],
        2,
        "does not hold",
        "empty-dir",
    ),
    "data dir incomplete": Case(
        ["train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/part"],
        2,
        "lacks train-labels-idx1-ubyte.gz",
        "incomplete-dir",
    ),
    "mnist from fashion-mnist files": Case(
        ["train", "--dataset", "mnist", "--data-dir", str(FASHION), *QUICK],
        2,
        "checksum mismatch",
    ),
    "corrupt data file": Case(
        ["train", "--dataset", "fashion-mnist", "--data-dir", "{tmp}/fm", *QUICK],
        2,
        "checksum mismatch for",
        "corrupt-data",
    ),
    "data check of an unknown name": Case(["data", "check", "imagenet"], 2, "unknown dataset"),
    "data list of a missing --data-dir": Case(
        ["data", "list", "--data-dir", "{tmp}/nowhere"], 2, "nowhere is not a directory"
    ),
    # run directories
    "existing output": Case(
        ["simulate", *QUICK, "--out", "{tmp}/full"], 2, "overwrite it with --force", "notes"
    ),
    "empty --out, forced": Case(
        ["simulate", *QUICK, "--out", "", "--force"], 2, "--out (out=) names no directory"
    ),
    "an --out name of 300 characters": Case(
        ["simulate", *QUICK, "--out", "{tmp}/" + "x" * 300], 2, "File name too long"
    ),
    "output under a file": Case(
        ["simulate", *QUICK, "--out", "{tmp}/afile/run"], 2, "afile", "file-in-the-way"
    ),
    "resume without a checkpoint": Case(
        ["simulate", "--resume", "--out", "{tmp}/none"], 2, "no checkpoint.pt"
    ),
    "resume with another config": Case(
        ["simulate", "--resume", "--out", "{run}", "--beta", "2"],
        2,
        "differs from the saved run in train.beta",
        keeps_run=True,
    ),
    "resume of a simulate run by train": Case(
        ["train", "--resume", "--out", "{run}"], 2, "is not a `ctsp train` config", keeps_run=True
    ),
    "resume to fewer epochs than done": Case(
        ["simulate", "--resume", "--out", "{run}", "--epochs", "1"],
        2,
        "it has trained 2 epochs already",
        keeps_run=True,
    ),
    "checkpoint without rows": Case(
        ["simulate", "--resume", "--out", "{run}"],
        2,
        "not a ctsp checkpoint: no 'rows' entry",
        "no-rows",
    ),
    "checkpoint without model": Case(
        ["simulate", "--resume", "--out", "{run}"],
        2,
        "not a ctsp checkpoint: no 'model' entry",
        "no-model",
    ),
    "random-bytes checkpoint": Case(
        ["simulate", "--resume", "--out", "{run}"], 2, "cannot read checkpoint", "random-checkpoint"
    ),
    "truncated checkpoint": Case(
        ["simulate", "--resume", "--out", "{run}"],
        2,
        "truncated or not a ctsp checkpoint",
        "truncated-checkpoint",
    ),
    # runs that fail or do not learn
    "divergence": Case(
        [
            "simulate",
            *QUICK,
            "--out",
            "{tmp}/div",
            "--set",
            "network.rate=sigmoid",
            "--set",
            "solver.step=5.0",
            "--set",
            "solver.free_duration=2000.0",
        ],  # fmt: skip
        1,
        "diverged",
    ),
    "overflowing learning rate": Case(
        ["train", *QUICK, "--lr", "1e38", "--out", "{tmp}/lr"], 1, "overflow"
    ),
    "at chance, warned": Case(
        ["simulate", *QUICK, "--out", "{tmp}/chance", "--set", "train.lr=[1e6,1e6]"],
        0,
        "is at chance",
        prefix="ctsp: warning: ",
    ),
    "at chance, an error": Case(
        [
            "simulate",
            *QUICK,
            "--out",
            "{tmp}/chance",
            "--set",
            "train.lr=[1e6,1e6]",
            "--set",
            "train.health=error",
        ],  # fmt: skip
        1,
        "keeps the checkpoint of epoch 1",
    ),
    "huge beta": Case(
        ["simulate", *QUICK, "--out", "{tmp}/beta", "--beta", "1e9"],
        0,
        "is at chance",
        prefix="ctsp: warning: ",
    ),  # fmt: skip
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 2-epoch `ctsp simulate` run, copied into each case."""
    out = tmp_path_factory.mktemp("base") / "run"
    proc = ctsp("simulate", "--epochs", "2", "--no-progress", "--out", out, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr
    return out


def _files(root: Path) -> dict[Path, bytes | None]:
    """Every path under ``root``: a file's bytes, None for a directory."""
    return {p.relative_to(root): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


def _run_case(case: Case, root: Path, base: Path):
    root.mkdir()
    shutil.copytree(base, root / "run")
    if case.setup:
        SETUPS[case.setup](root)
    argv = [a.replace("{tmp}", str(root)).replace("{run}", str(root / "run")) for a in case.argv]
    before = _files(root)
    proc = ctsp(*argv, cwd=root, env=case.env, limit_file_size=case.limit_file_size)
    after = _files(root)
    # nothing of the user's touched; and bad input (exit 2) writes nothing at all
    assert {p: after.get(p) for p in before} == before, argv
    assert case.code != 2 or after == before, sorted(set(after) - set(before))
    if case.keeps_run:  # nothing lost: the saved run still resumes (and has nothing to do)
        again = ctsp("simulate", "--resume", "--out", root / "run", "--no-progress", cwd=root)
        assert again.returncode == 0, again.stderr
    if case.setup == "notes":
        assert (root / "full" / "notes.txt").read_text() == "keep me"
    return proc


@pytest.fixture(scope="module")
def results(tmp_path_factory, finished_run) -> dict:
    """Every case of CASES, two processes at a time."""
    root = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(2) as pool:
        futures = {
            name: pool.submit(_run_case, case, root / f"case{k}", finished_run)
            for k, (name, case) in enumerate(CASES.items())
        }
        return {name: f.result() for name, f in futures.items()}


def _assert_one_line(proc, code: int, prefix: str, message: str) -> None:
    err = proc.stderr
    assert "Traceback" not in err, err
    assert proc.returncode == code, (proc.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix) and message in lines[0], lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_or_fault_gives_one_line_and_its_exit_code(name, results):
    case = CASES[name]
    _assert_one_line(results[name], case.code, case.prefix, case.message)


def test_a_full_disk_loses_nothing(tmp_path):
    """Writes past a size fail (EFBIG, as on a full disk). Too small for the first checkpoint:
    nothing is left, and a plain rerun works. Room for checkpoints but not for the recorded
    trajectories (written at the end): the run stops keeping epoch 1, and resumes once there is
    room. No partial file is left either way."""
    out = tmp_path / "small"
    proc = ctsp("simulate", "--out", out, *QUICK, cwd=tmp_path, limit_file_size=20_000)
    _assert_one_line(proc, 1, "ctsp: error: ", "checkpoint.pt: File too large; nothing was saved")
    assert not out.exists()  # the directory it made is gone again
    assert ctsp("simulate", "--out", out, *QUICK, cwd=tmp_path).returncode == 0
    out = tmp_path / "late"
    argv = ["simulate", "--out", out, "--epochs", "2", "--record", "20", "--no-progress"]
    proc = ctsp(*argv, cwd=tmp_path, limit_file_size=300_000)
    _assert_one_line(proc, 1, "ctsp: error: ", "trajectories.nc: File too large; ")
    assert "keeps the checkpoint of epoch 1" in proc.stderr
    assert not list(out.glob(".*.tmp"))
    resumed = ctsp("simulate", "--out", out, "--resume", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0 and "epoch   2/2" in resumed.stdout, resumed.stderr
    assert (out / "trajectories.nc").is_file()


@pytest.fixture
def full_disk(tmp_path) -> Iterator[Path]:
    """A 64 kB tmpfs filled to the last byte (mounting needs root, as CI has)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 and not os.environ.get("CI"):
        pytest.skip("mounting a small tmpfs needs root (CI runs this test as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", disk], check=True)
    try:
        with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        yield disk
    finally:
        subprocess.run(["umount", disk], check=True)


def test_a_full_disk_at_the_start_leaves_nothing(full_disk, tmp_path):
    """ENOSPC while the lock file is written: one line, and no directory or lock left."""
    out = full_disk / "runs" / "a"
    proc = ctsp("simulate", "--out", out, *QUICK, cwd=tmp_path)
    _assert_one_line(proc, 1, "ctsp: error: ", f"cannot write {out / '.lock'}: No space left on")
    assert proc.stderr.rstrip().endswith("nothing was saved")
    assert [p.name for p in full_disk.iterdir()] == ["filler"]


def test_configs_into_a_closed_pipe(tmp_path):
    proc = subprocess.run(
        f"{sys.executable} -m ctsp configs | head -1", shell=True, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.startswith("est. time") and not proc.stderr
    assert proc.stdout.count("\n") == 1


# ---------------------------------------------------------------------------- timed faults


def _default_sigint() -> None:
    """In the child: SIGINT as a terminal sends it. A shell without job control starts its
    background commands with SIGINT ignored, and Python then installs no handler for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ctsp", "simulate", "--out", str(out), "--no-progress", *extra]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint
    )


def _weights(out: Path) -> dict:
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    return {**ckpt["model"], "rows": len(ckpt["rows"])}


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.005)


def test_a_long_relaxation_answers_sigterm_within_a_second(tmp_path):
    """A free phase of 2e7 Euler steps (solver.max_steps raised for it) holds its memory and
    stops within a second of SIGTERM (before, torchdiffeq's grid of 2e7 tensors took
    gigabytes and the signal waited 23-36 s)."""
    out = tmp_path / "run"
    long = ["--set", "solver.free_duration=1e7", "--set", "solver.max_steps=20000000"]
    proc = _start(out, "--epochs", "1", *long)
    _wait_for(lambda: (out / "checkpoint.pt").is_file(), proc)
    time.sleep(3)  # well into the first free phase
    rss = int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE")
    assert rss < 2e9, rss
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - t0 < 1.5, err
    assert proc.returncode == 143 and "keeps the checkpoint of the start" in err, err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_in_epoch_one_keeps_the_start_and_resumes(tmp_path, signum, code):
    out = tmp_path / "run"
    proc = _start(out, "--epochs", "3")
    _wait_for(lambda: (out / "checkpoint.pt").is_file(), proc)  # the start is saved: epoch 1
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [
        f"ctsp: interrupted: {out} keeps the checkpoint of the start (no epoch trained yet): "
        f"continue with --out {out} --resume"
    ]
    again = ctsp("simulate", "--out", out, "--resume", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "epoch   3/3" in again.stdout, again.stderr


def test_a_second_run_on_a_locked_directory_is_refused(tmp_path):
    out = tmp_path / "run"
    first = _start(out, "--epochs", "30")
    first.stdout.readline()  # epoch 1 done: the run holds its lock
    for argv in (["--force"], ["--resume"]):
        proc = ctsp("simulate", "--out", out, *QUICK, *argv, cwd=tmp_path)
        _assert_one_line(proc, 2, "ctsp: error: ", f"another ctsp run (PID {first.pid})")
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert first.returncode == 143


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_kill_9_in_epoch_one_and_later_resumes_bitwise(tmp_path, backend):
    """kill -9 (no handler runs) during epoch 1 and during epoch 3; each resumed run ends with
    the weights of the uninterrupted run, bit for bit."""
    extra = ["--epochs", "4", "--set", f"train.chl_backend={backend}"]
    full = tmp_path / "full"
    done = ctsp("simulate", "--out", full, "--no-progress", *extra, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for at, rows in (("start", 0), ("epoch   2/4", 2)):
        out = tmp_path / f"killed-{rows}"
        proc = _start(out, *extra)
        if at == "start":
            _wait_for(lambda out=out: (out / "checkpoint.pt").is_file(), proc)
        else:
            while not proc.stdout.readline().startswith(at):
                assert proc.poll() is None
        proc.kill()
        proc.communicate(timeout=60)
        assert _weights(out)["rows"] == rows  # killed in epoch rows + 1
        again = ctsp("simulate", "--out", out, "--resume", "--no-progress", cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        got, want = _weights(out), _weights(full)
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == v if k == "rows" else torch.equal(got[k], v), k


def test_two_seeded_default_runs_are_bitwise_identical(tmp_path):
    """`ctsp simulate` with the default config (30 epochs of digits), twice."""
    for name in ("a", "b"):
        proc = ctsp("simulate", "--out", tmp_path / name, "--no-progress", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k, v in a.items():
        assert b[k] == v if k == "rows" else torch.equal(b[k], v), k


# parallel runs: every process that speaks says one correct line (tests/test_parallel.py has
# kill -9 of a worker and a hung worker)
PIPELINE = ["train", "--set", "model.dropout=0.2", "--workers", "2", "--set", "parallel.stages=2"]
REPLICAS = ["train", "--set", "model.dropout=0.2", "--workers", "2", "--set", "parallel.replicas=2"]
NOT_CPP = ("Exception raised from", "frame #", "Traceback", "C++")


def _parallel_lines(proc, within: float, started: float) -> list[str]:
    """The error lines of a ``--workers`` run (its workers write to the same standard error),
    after checking that it ended within ``within`` seconds of ``started``, with no C++ stack
    dump or traceback."""
    _, err = proc.communicate(timeout=within + 60)
    assert time.monotonic() - started < within, err
    assert not any(mark in err for mark in NOT_CPP), err
    return err.strip().splitlines()


def _spawn(argv, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ctsp", *map(str, argv), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _checkpointed(out: Path, proc, timeout: float = 120) -> None:
    """Wait until the running ``proc`` has written its first checkpoint into ``out``."""
    deadline = time.monotonic() + timeout
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["existing-out", "resume-without-checkpoint", "locked", "diverging"],
)
def test_a_refused_or_failing_parallel_run_says_one_line_from_rank_0(case, tmp_path):
    """Rank 0 fails on its own: it says why in one line, its worker says nothing (it is ended
    before the group goes), no "--resume" where a resume cannot help. Timed from the command's
    start, so the bound holds two processes loading torch and the data (10-20 s on a busy
    2-core machine); the stop after the cause is what the kill tests time."""
    out = tmp_path / "run"
    argv = [*PIPELINE, "--epochs", "1", "--out", out]
    expected = {
        "existing-out": "exists and is not empty; overwrite it with --force",
        "resume-without-checkpoint": "no checkpoint.pt there",
        "locked": "is in use",
        "diverging": "diverged",
    }[case]
    running = None
    if case == "existing-out":
        assert ctsp(*argv, "--no-progress", cwd=tmp_path).returncode == 0
    elif case == "resume-without-checkpoint":
        argv.append("--resume")
    elif case == "locked":
        running = _spawn([*PIPELINE, "--epochs", "200", "--out", out])
        _checkpointed(out, running)
        argv.append("--resume")
    else:
        argv += ["--set", "train.lr=1e30"]
    try:
        t0 = time.monotonic()
        lines = _parallel_lines(_spawn(argv), 30, t0)
    finally:
        if running is not None:
            running.kill()
            running.wait()
    assert len(lines) == 1 and expected in lines[0], lines
    assert case == "existing-out" or "--resume" not in lines[0]  # (there it is right)


@pytest.mark.slow
def test_kill_9_of_rank_0_is_one_line_from_the_worker_with_resume(tmp_path):
    """The worker writes to rank 0's standard error, which stays open until it ends too."""
    out = tmp_path / "run"
    proc = _spawn([*PIPELINE, "--epochs", "200", "--out", out])
    _checkpointed(out, proc)
    t0 = time.monotonic()
    proc.kill()
    lines = _parallel_lines(proc, 10, t0)
    assert len(lines) == 1 and "rank 0" in lines[0], lines
    assert lines[0].endswith("the run stops (continue it with --resume)")


def _worker_pid(parent: int) -> int:
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    (pid,) = found.stdout.split()
    return int(pid)


@pytest.mark.slow
def test_a_dead_replica_is_named_with_its_rank_and_backend(tmp_path):
    out = tmp_path / "run"
    proc = _spawn([*REPLICAS, "--epochs", "200", "--out", out])
    _checkpointed(out, proc)
    worker = int(
        subprocess.run(
            ["pgrep", "-P", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()[0]
    )
    t0 = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    lines = _parallel_lines(proc, 10, t0)
    assert len(lines) == 1 and "rank 1 of the replicas" in lines[0], lines
    assert lines[0].endswith("(continue it with --resume)")
    assert proc.returncode == 1


@pytest.mark.slow
@pytest.mark.parametrize("argv", [PIPELINE, REPLICAS], ids=["pipeline", "replicas"])
def test_a_full_disk_in_a_parallel_run_is_one_line_at_once(argv, full_disk, tmp_path):
    t0 = time.monotonic()
    # from the command's start, as above: rank 0 fails at the first write, its workers at once
    lines = _parallel_lines(_spawn([*argv, "--epochs", "1", "--out", full_disk / "run"]), 30, t0)
    assert len(lines) == 1 and "No space left on device" in lines[0], lines
