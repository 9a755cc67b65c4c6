"""Every command shown in README.md and docs/*.md runs as written from a fresh clone.

What is extracted: the code blocks of README.md and docs/*.md (not docs/tables/, docs/metrics/):
indented blocks (4 spaces, after a blank line) and fenced blocks. A block is

- shell: fenced ``bash``/``sh``/``shell``/``console``, or an indented (or unlabelled fenced)
  block whose first line starts with a program of ``SHELL_WORDS`` or a ``NAME=value``
  assignment. bash itself splits it into commands (``commands``): it reads the block in
  restricted mode with an empty PATH, so nothing runs; every command it would start goes to
  ``command_not_found_handle``, which records the line, the ``NAME=value`` prefixes and the
  words after expansion. So quoting, ``# comments``, backslash continuations, ``&&``, ``for``
  loops and variables of the block (``S="--set ..."`` then ``$S``) mean what they mean in a
  shell; a command given by an absolute path (``/usr/bin/time ...``) is recorded too.
- python: fenced ``python``, or an indented block starting with ``from``/``import``;
- text (trees, equations, diagrams): nothing to run, but a text block with a line that looks
  like a command fails (so that a new command cannot hide there).

Where a command runs: a page that says it runs "from an empty directory" (docs/trajectories.md)
runs in an empty temporary directory; every other page from a fresh clone: a temporary copy of
the checkout's tracked files (``git ls-files``), so that ``runs/...`` lands there.

How each command is checked: the first rule of ``SHELL_RULES`` whose pattern matches the
command's words (joined by spaces, the ``NAME=value`` prefixes apart) decides; a command that
matches no rule fails ``test_every_block_and_command_is_classified``, and so does a rule that
matches nothing any more. The checks:

- RUN: run as written (a subprocess, the venv's ``bin`` first on PATH); exit 0, and a run
  command leaves a run directory with ``metrics.nc``. RUN_SLOW: the same, marked slow.
- PRINT_CONFIG: ``ctsp simulate|train ... --print-config`` in-process (``ctsp.cli.main``): it
  resolves and validates the config name, every flag and every ``--set`` key without training,
  and must exit 0 and print TOML. ``--device cuda`` needs no GPU for this: the config only
  checks the device's spelling (and accepts ``train.precision=float16`` with ``cuda``), so
  nothing is patched. A ``--resume`` of ``--out DIR`` is checked with the ``config.toml`` that
  the page's earlier command with the same ``--out`` writes (its resolved config); the resumed
  config must be that run's (same ``name``). A resume that no earlier command prepares fails:
  with a missing DIR, ``--print-config`` silently prints the defaults.
- SCRIPT: ``python figures|benchmarks/X.py ARGS`` in-process as ``python`` runs a script (cwd,
  ``sys.argv``, ``sys.path[0]`` the script's folder, ``__main__``): the file exists where the
  page runs it, ``--help`` exits 0, and ARGS parse (argparse stops the script right after).
- PIP: ``pip install --dry-run --no-index --no-build-isolation ...`` in the clone: the project
  builds its metadata, the extras exist and every requirement is met offline.
- SWEEP: ``ctsp sweep ...`` in-process: its flags parse (``ctsp.cli``'s parser), the spec
  loads (``ctsp.sweeps.load_spec``) and lists its trials; ``--summary DIR`` needs an earlier
  command of the page that sweeps into ``--out DIR``.
- PLOT: ``ctsp plot DIR``: its flags parse, and an earlier command of the page writes DIR.
- SUITE: ``pytest`` (the whole suite, this file included, so not run here): the page's line is
  what ``.ci/run`` runs verbatim, and ``pytest --version`` runs.

Python blocks all compile; ``PY_RULES`` says what else runs (EXEC, EXEC_SLOW, DEFINE, IMPORTS,
IN_ORDER). A page that says its blocks run "as written, in this order" is also run so, block
after block, where the page runs (``test_ordered_page_runs_as_written``, slow).

Fast part: ``pytest tests/test_docs_commands.py``; the slow runs: ``pytest -m slow ...``.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import tempfile
import tomllib
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctsp.cli import main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: ctsp, python, pip, pytest
PAGES = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
# A page saying it runs "from an empty directory" runs from one; every other page from a clone.
EMPTY_DIR = re.compile(r"from\s+an\s+empty\s+directory")
# A page saying its blocks run "as written, in this order" is also run so, as a whole.
IN_ORDER_CLAIM = re.compile(r"runs\s+as\s+written,\s+in\s+this\s+order")

# The first word of a command line (after NAME=value prefixes): a text block may not hold one.
SHELL_WORDS = set(
    "ctsp python python3 pip pip3 pytest bash sh conda apt-get apt git make cd export source for "
    "env time /usr/bin/time ruff lint-imports CTSP_DATA OMP_NUM_THREADS".split()
)

RUN, RUN_SLOW, PRINT_CONFIG, SCRIPT, PIP, SUITE, SWEEP, PLOT = (
    "run run-slow print-config script pip suite sweep plot".split()
)


@dataclass(frozen=True)
class Rule:
    pattern: str  # re.fullmatch against the command's words joined by spaces
    check: str


# First match wins. Times: this 2-core machine, idle / with its cores shared.
SHELL_RULES = (
    # README: lists the bundled configs; about 5 s (the import).
    Rule(r"ctsp configs", RUN),
    # README: argparse's help (lazy imports): well under a second.
    Rule(r"ctsp (simulate|train) --help", RUN),
    # README: every config key with its type, default and valid values; about 5 s.
    Rule(r"ctsp (simulate|train) --help-config", RUN),
    # README: the default discrete run (FC on digits, 30 epochs): 13 s idle, 70-100 s shared.
    Rule(r"ctsp train", RUN_SLOW),
    # README: the default continuous run (digits loop network; "about 15 s" says the README):
    # 40 s to 11 min here.
    Rule(r"ctsp simulate", RUN_SLOW),
    # docs/performance.md: the same run under GNU time (/usr/bin/time must exist).
    Rule(r"/usr/bin/time -v ctsp simulate", RUN_SLOW),
    # Paper networks, baselines, spiking runs (--device cuda), resumes: minutes to days; the
    # config is resolved and validated instead.
    Rule(r"ctsp (simulate|train) .+", PRINT_CONFIG),
    # Sweeps (Ray; tests/test_sweeps.py runs the bundled one): the flags parse, the spec loads
    # and lists its trials, a --summary reads a directory an earlier command sweeps into.
    Rule(r"ctsp sweep .+", SWEEP),
    # Learning curves of a run or sweep (tests/test_runs.py and test_sweeps.py draw them): the
    # flags parse, and an earlier command of the page writes the directory.
    Rule(r"ctsp plot .+", PLOT),
    # Figure and benchmark scripts: minutes to hours; --help and the page's arguments.
    Rule(r"python (figures|benchmarks)/\w+\.py( .*)?", SCRIPT),
    # README: the install (downloads, minutes): a dry run, offline.
    Rule(r"pip install -e \.(\[\w+(,\w+)*\])?", PIP),
    # README: the whole test suite, this file included: what .ci/run runs.
    Rule(r"pytest", SUITE),
)

EXEC, EXEC_SLOW, DEFINE, IMPORTS, IN_ORDER = "exec exec-slow define imports in-order".split()


@dataclass(frozen=True)
class PyRule:
    page: str
    pattern: str  # re.search (MULTILINE) in the block's code
    check: str
    prelude: str = ""  # DEFINE: the names of the module the sketch is added to


# First match (for the page) wins.
PY_RULES = (
    # An extension sketch for a module of ctsp/discrete/ (tests/test_extending.py runs the real
    # one): the class is defined with that module's names, so its bases and names resolve.
    PyRule(
        "docs/architecture.md",
        r"^class OutputOnly\(Rules\):",
        DEFINE,
        prelude="import torch\n\nfrom ctsp.discrete import ClassifierCE, Rules\n",
    ),
    # The same for a spiking neuron model (ctsp/spiking/).
    PyRule(
        "docs/architecture.md",
        r"^class LIFNeuron\(SpikingNeuron\):",
        DEFINE,
        prelude="from ctsp.spiking import SpikingNeuron\n",
    ),
    # The same for a continuous-time solver and learning rule (ctsp/continuous/).
    PyRule(
        "docs/architecture.md",
        r"^class HandEuler\(TimeStepping\):",
        DEFINE,
        prelude="from ctsp.continuous import TimeStepping\n",
    ),
    PyRule(
        "docs/architecture.md",
        r"^class OutputOnlyCHL\(ContrastiveHebbian\):",
        DEFINE,
        prelude="from ctsp.continuous import ContrastiveHebbian\n",
    ),
    # Times four rules on VGG8b, batch 128: 7 minutes here (cores shared); its imports
    # run (the names exist), the measurement does not.
    PyRule("docs/baselines.md", r"^rows = measure\(", IMPORTS),
    # "From Python, without a run": self-contained, a tiny relaxation, well under a second.
    PyRule("docs/trajectories.md", r"^from models import LayeredNetwork$", EXEC),
    # The rest of the tutorial reads runs/traj and the names of the blocks before it: run in
    # order by test_ordered_page_runs_as_written (slow).
    PyRule("docs/trajectories.md", r"", IN_ORDER),
    # README "Studies": reads a sweep directory that only a sweep on Ray makes (tests/
    # test_sweeps.py runs open_sweep): the names exist.
    PyRule("README.md", r"ctsp\.open_sweep\(", IMPORTS),
    # README "From Python": a 5-epoch digits run into runs/demo; 9 s idle, 19 s shared.
    PyRule("README.md", r'simulate\(config, "runs/demo"\)', EXEC_SLOW),
)


# --- extraction ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # line of the block's first code line in the page (1-based)
    kind: str  # "shell", "python" or "text"
    lines: tuple[str, ...]  # the code, dedented

    @property
    def code(self) -> str:
        return "\n".join(self.lines) + "\n"

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # the line as written (continuation lines joined)
    env: tuple[tuple[str, str], ...]  # NAME=value prefixes
    argv: tuple[str, ...]  # the words after the shell's expansion

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def words(self) -> str:
        return " ".join(self.argv)

    def option(self, name: str) -> str | None:
        for i, word in enumerate(self.argv):
            if word == name and i + 1 < len(self.argv):
                return self.argv[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
        return None


def first_word(line: str) -> str:
    """The program of a command line: its first word after NAME=value prefixes."""
    rest = re.sub(r"""^(?:[A-Za-z_]\w*=(?:"[^"]*"|'[^']*'|\S)*\s+)*""", "", line.strip())
    return rest.split(maxsplit=1)[0] if rest else ""


def looks_like_shell(line: str) -> bool:
    s = line.strip()
    return bool(re.match(r"[A-Za-z_]\w*=", s)) or first_word(s) in SHELL_WORDS or s[:2] == "$ "


def block_kind(lang: str, lines: list[str]) -> str:
    if lang in ("bash", "sh", "shell", "console", "zsh"):
        return "shell"
    if lang in ("python", "py"):
        return "python"
    if lang not in ("", "indented"):
        return "text"
    first = next((ln for ln in lines if ln.strip()), "")
    if re.match(r"(from [\w.]+ import |import \w)", first):
        return "python"
    return "shell" if looks_like_shell(first) else "text"


def blocks(page: str) -> list[Block]:
    """The code blocks of a page: fenced (```lang) and indented (4 spaces after a blank line)."""
    lines = (ROOT / page).read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(`{3,}|~{3,})\s*([\w+-]*)", lines[i])
        if fence:
            start, i = i + 1, i + 1
            while i < len(lines) and not lines[i].startswith(fence.group(1)):
                i += 1
            body = lines[start:i]
            found.append(Block(page, start + 1, block_kind(fence.group(2), body), tuple(body)))
            i += 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            start = i
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                i += 1
            end = i
            while not lines[end - 1].strip():
                end -= 1
            body = [ln[4:] for ln in lines[start:end]]
            found.append(Block(page, start + 1, block_kind("indented", body), tuple(body)))
        else:
            i += 1
    return found


# bash calls command_not_found_handle for every command it cannot find (PATH is an empty
# directory): it prints the calling line, the exported NAME=value prefixes and the words.
HANDLER = (
    "command_not_found_handle() { local n; printf '%s\\035' \"${BASH_LINENO[0]}\"; "
    "for n in $(compgen -e); do case $n in PATH|PWD|SHLVL|OLDPWD|_) ;; "
    '*) printf \'%s=%s\\035\' "$n" "${!n}";; esac; done; '
    "printf '\\034'; printf '%s\\037' \"$@\"; printf '\\036'; return 0; }"
)
ABSOLUTE = "__absolute__"  # put before a line's absolute program, which restricted bash refuses
BASH = shutil.which("bash") or "/bin/bash"


def logical_start(lines: tuple[str, ...], index: int) -> str:
    """The line at ``index`` with its backslash continuations, as written."""
    parts = [lines[index]]
    while parts[-1].rstrip().endswith("\\") and index + 1 < len(lines):
        index += 1
        parts.append(lines[index])
    return "\n".join(parts).strip()


def commands(block: Block, scratch: Path) -> list[Command]:
    """The commands a shell would run for ``block``, in order (bash parses; nothing runs)."""
    if "$(" in block.code:  # the recording handler would run inside the substitution
        raise ValueError(f"{block.where}: command substitution $(...): not checked by this test")
    code, continued = [], False
    for ln in block.lines:
        start = not continued and ln.lstrip().startswith("/")
        code.append(ln.replace(ln.lstrip(), f"{ABSOLUTE} {ln.lstrip()}", 1) if start else ln)
        continued = ln.rstrip().endswith("\\")
    empty = scratch / "empty-path"
    empty.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [BASH, "-r", "-c", HANDLER + "\n" + "\n".join(code) + "\n"],
        env={"PATH": str(empty)},
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if proc.returncode != 0 or proc.stderr:
        raise ValueError(f"{block.where}: bash cannot read the block: {proc.stderr.strip()}")
    found = []
    for record in filter(None, proc.stdout.split("\x1e")):
        if "\x1c" not in record:  # a builtin (echo, printf) wrote it
            raise ValueError(f"{block.where}: the block prints in the shell itself: {record!r}")
        head, words = record.split("\x1c")
        lineno, *env = filter(None, head.split("\x1d"))
        argv = words.split("\x1f")[:-1]
        if argv[0] == ABSOLUTE:
            argv = argv[1:]
        index = int(lineno) - 2  # the handler is line 1
        pairs = tuple(tuple(kv.split("=", 1)) for kv in env)
        text = logical_start(block.lines, index)
        found.append(Command(block.page, block.line + index, text, pairs, tuple(argv)))
    return found


def rule_of(cmd: Command) -> Rule | None:
    return next((r for r in SHELL_RULES if re.fullmatch(r.pattern, cmd.words)), None)


def py_rule_of(block: Block) -> PyRule | None:
    return next(
        (
            r
            for r in PY_RULES
            if r.page == block.page and re.search(r.pattern, block.code, flags=re.M)
        ),
        None,
    )


def _extract(scratch: Path):
    all_blocks, cmds, problems = [], [], []
    for page in PAGES:
        for block in blocks(page):
            all_blocks.append(block)
            if block.kind == "shell":
                try:
                    cmds += commands(block, scratch)
                except ValueError as e:
                    problems.append(str(e))
    return all_blocks, cmds, problems


with tempfile.TemporaryDirectory() as _scratch:
    BLOCKS, COMMANDS, PROBLEMS = _extract(Path(_scratch))


def page_cwd(page: str) -> str:
    return "empty" if EMPTY_DIR.search((ROOT / page).read_text()) else "clone"


def cmd_id(cmd: Command) -> str:
    return f"{cmd.where} {cmd.words}"[:90]


def commands_of(*checks: str) -> list:
    params = []
    for cmd in COMMANDS:
        rule = rule_of(cmd)
        if rule is not None and rule.check in checks:
            marks = [pytest.mark.slow] if rule.check == RUN_SLOW else []
            params.append(pytest.param(cmd, id=cmd_id(cmd), marks=marks))
    return params


def python_blocks(*checks: str) -> list:
    params = []
    for block in BLOCKS:
        rule = py_rule_of(block) if block.kind == "python" else None
        if block.kind == "python" and (not checks or (rule and rule.check in checks)):
            slow = [pytest.mark.slow] if rule and rule.check == EXEC_SLOW else []
            params.append(pytest.param(block, rule, id=block.where, marks=slow))
    return params


# --- where commands run -------------------------------------------------------------------


@pytest.fixture(scope="session")
def pristine_clone(tmp_path_factory) -> Path:
    """The checkout's tracked files (as in a fresh clone; working-tree contents)."""
    dest = tmp_path_factory.mktemp("clone") / "ctsp"
    try:
        listed = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        names = [n for n in listed.split("\0") if n]
    except (OSError, subprocess.SubprocessError):  # not a git checkout: all but the ignored
        skip = {".git", ".venv", "runs", "build", "__pycache__", ".pytest_cache", ".ruff_cache"}
        names = [
            str(p.relative_to(ROOT))
            for p in ROOT.rglob("*")
            if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
        ]
    for name in names:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture
def workdir(tmp_path, pristine_clone):
    """A function giving the directory a page's commands run in (fresh for each test)."""

    def make(page: str) -> Path:
        if page_cwd(page) == "empty":
            path = tmp_path / "empty"
            path.mkdir(exist_ok=True)
            return path
        path = tmp_path / "clone"
        if not path.exists():
            shutil.copytree(pristine_clone, path)
        return path

    return make


def check(ok: bool, message: str) -> None:
    """Fail with just the message (where, the command, the exit code, stderr), no traceback."""
    if not ok:
        pytest.fail(message, pytrace=False)


def tail(text: str, n: int = 15) -> str:
    lines = [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]
    return "\n".join("    " + ln for ln in lines[-n:]) or "    (empty)"


def failure(cmd: Command, cwd_kind: str, what: str, err: str = "") -> str:
    where = "a fresh clone" if cwd_kind == "clone" else "an empty directory"
    return f"{cmd.where}: `{cmd.text}` (run in {where}): {what}\n  stderr, last lines:\n{tail(err)}"


def subprocess_env(cmd: Command) -> dict[str, str]:
    env = {**os.environ, **dict(cmd.env)}
    env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env.pop("CTSP_DEBUG", None)
    return env


def run_as_written(cmd: Command, cwd: Path, argv=None, timeout: int = 1800):
    try:
        return subprocess.run(
            list(argv or cmd.argv),
            cwd=cwd,
            env=subprocess_env(cmd),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except FileNotFoundError as e:
        return subprocess.CompletedProcess(cmd.argv, 127, "", f"{e}")
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        return subprocess.CompletedProcess(
            cmd.argv, "timeout", "", f"{err}\ntimed out: {timeout} s"
        )


# --- the checks ---------------------------------------------------------------------------


def test_every_block_and_command_is_classified():
    """Every shell command matches a rule, every python block a PyRule, no text block holds a
    command, every shell line is a command bash found, and every rule is still used."""
    problems = list(PROBLEMS)
    for cmd in COMMANDS:
        if rule_of(cmd) is None:
            problems.append(f"{cmd.where}: `{cmd.text}` matches no rule of SHELL_RULES")
    for block in BLOCKS:
        if block.kind == "text":
            for k, ln in enumerate(block.lines):
                if looks_like_shell(ln):
                    problems.append(f"{block.page}:{block.line + k}: a command in a text block")
        elif block.kind == "python" and py_rule_of(block) is None:
            problems.append(f"{block.where}: a python block that matches no rule of PY_RULES")
        elif block.kind == "python" and py_rule_of(block).check == IN_ORDER:
            if not IN_ORDER_CLAIM.search((ROOT / block.page).read_text()):
                problems.append(f"{block.where}: IN_ORDER, but its page is not run in order")
        elif block.kind == "shell":
            starts = {c.line for c in COMMANDS if c.page == block.page}
            continued = False
            for k, ln in enumerate(block.lines):
                s, was_continued = ln.strip(), continued
                continued = s.endswith("\\")
                if was_continued or not s or s.startswith("#") or s in ("do", "done"):
                    continue
                words = shlex.split(s.rstrip("\\"), comments=True)
                assignment = len(words) == 1 and re.match(r"[A-Za-z_]\w*=", words[0])
                if not (assignment or s.startswith("for ") or block.line + k in starts):
                    problems.append(f"{block.page}:{block.line + k}: no command found in `{s}`")
    classified = [rule_of(c) for c in COMMANDS]
    for rule in SHELL_RULES:
        if rule not in classified:
            problems.append(f"SHELL_RULES: {rule.pattern!r} matches no command any more")
    used = [py_rule_of(b) for b in BLOCKS if b.kind == "python"]
    for rule in PY_RULES:
        if rule not in used:
            problems.append(f"PY_RULES: {rule.page} {rule.pattern!r} matches no block any more")
    assert COMMANDS and any(b.kind == "python" for b in BLOCKS)
    check(not problems, "\n".join(problems))


@pytest.mark.parametrize("cmd", commands_of(RUN, RUN_SLOW))
def test_runs_as_written(cmd, workdir):
    """RUN/RUN_SLOW: the command as a user types it; exit 0; a run leaves its run directory."""
    cwd = workdir(cmd.page)
    before = set((cwd / "runs").glob("*")) if (cwd / "runs").is_dir() else set()
    proc = run_as_written(cmd, cwd)
    check(
        proc.returncode == 0,
        failure(cmd, page_cwd(cmd.page), f"exit {proc.returncode}", proc.stderr),
    )
    if re.fullmatch(r"(/usr/bin/time -v )?ctsp (simulate|train)", cmd.words):
        made = {p for p in (cwd / "runs").glob("*") if (p / "metrics.nc").is_file()} - before
        check(made, failure(cmd, page_cwd(cmd.page), "no run directory in runs/", proc.stderr))


def print_config(cmd: Command, cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    assert cmd.argv[0] == "ctsp"
    monkeypatch.chdir(cwd)
    for name, value in cmd.env:
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    try:
        code = main([*cmd.argv[1:], "--print-config"])
    except SystemExit as e:  # argparse: a bad flag or value
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("cmd", commands_of(PRINT_CONFIG))
def test_config_resolves(cmd, workdir, monkeypatch, capsys):
    """PRINT_CONFIG: the command with --print-config exits 0 and prints the TOML of a config;
    a --resume resolves the config that its run directory holds."""
    cwd = workdir(cmd.page)
    kind = page_cwd(cmd.page)
    seeded = None
    if "--resume" in cmd.argv:
        out = cmd.option("--out")
        check(out is not None, failure(cmd, kind, "--resume without --out"))
        earlier = [
            c
            for c in COMMANDS
            if c.page == cmd.page
            and c.line < cmd.line
            and c.argv[:2] == cmd.argv[:2]
            and c.option("--out") == out
            and "--resume" not in c.argv
        ]
        check(
            earlier,
            failure(
                cmd,
                kind,
                f"resumes {out}, which no earlier command of the page creates (with a missing "
                "directory --print-config silently resolves the defaults)",
            ),
        )
        code, seeded, err = print_config(earlier[-1], cwd, monkeypatch, capsys)
        check(code == 0, failure(earlier[-1], kind, f"--print-config exit {code}", err))
        (cwd / out).mkdir(parents=True, exist_ok=True)
        (cwd / out / "config.toml").write_text(seeded)
    code, out, err = print_config(cmd, cwd, monkeypatch, capsys)
    check(code == 0, failure(cmd, kind, f"--print-config exit {code}", err))
    resolved = tomllib.loads(out)
    check(resolved.get("name"), failure(cmd, kind, "--print-config printed no config", err))
    if seeded is not None:
        first = tomllib.loads(seeded)["name"]
        check(
            resolved["name"] == first,
            failure(cmd, kind, f"resumed {resolved['name']!r}, not the saved run {first!r}", err),
        )


class _Parsed(Exception):
    """Raised right after a script's argparse parsed its arguments: the script stops there."""


def run_script(cmd: Command, args: list[str], cwd: Path, monkeypatch, capsys, stop_after_parse):
    """``python SCRIPT args`` in-process; returns (exit code or "parsed", stdout, stderr)."""
    script = cmd.argv[1]
    with monkeypatch.context() as mp:
        mp.chdir(cwd)
        for name, value in cmd.env:
            mp.setenv(name, value)
        mp.setattr(sys, "argv", [script, *args])
        mp.setattr(sys, "path", [str((cwd / script).parent), *sys.path])
        if stop_after_parse:
            parse = argparse.ArgumentParser.parse_args

            def parse_then_stop(self, args=None, namespace=None):
                raise _Parsed(parse(self, args, namespace))

            mp.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        capsys.readouterr()
        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except _Parsed:
            code = "parsed"
        except SystemExit as e:
            code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("cmd", commands_of(SCRIPT))
def test_script_starts(cmd, workdir, monkeypatch, capsys):
    """SCRIPT: the script is where the page runs it from, --help exits 0, its arguments parse."""
    cwd = workdir(cmd.page)
    kind = page_cwd(cmd.page)
    script = cmd.argv[1]
    check(
        (cwd / script).is_file(),
        failure(
            cmd,
            kind,
            "exit 2",
            f"python: can't open file '{cwd / script}': No such file or directory",
        ),
    )
    code, out, err = run_script(cmd, ["--help"], cwd, monkeypatch, capsys, False)
    check(code == 0 and "usage:" in out, failure(cmd, kind, f"--help: exit {code}", err))
    code, out, err = run_script(cmd, list(cmd.argv[2:]), cwd, monkeypatch, capsys, True)
    check(code == "parsed", failure(cmd, kind, f"its arguments do not parse (exit {code})", err))


@pytest.mark.parametrize("cmd", commands_of(SWEEP))
def test_sweep_spec_loads(cmd, workdir, monkeypatch):
    """SWEEP: the flags parse, the spec loads, a --summary follows a sweep into its DIR."""
    from ctsp.cli import _parser
    from ctsp.sweeps import load_spec

    cwd, kind = workdir(cmd.page), page_cwd(cmd.page)
    monkeypatch.chdir(cwd)
    args = _parser().parse_args(list(cmd.argv[1:]))
    if args.summary:
        earlier = [c for c in _writes(cmd, args.spec) if c.argv[:2] == cmd.argv[:2]]
        check(earlier, failure(cmd, kind, f"no earlier command sweeps into {args.spec}"))
        return
    check(args.out, failure(cmd, kind, "no --out"))
    spec = load_spec(args.spec)  # (a search's trials are proposed as it runs)
    check(spec.trials() or spec.searched, failure(cmd, kind, "the spec has no trials"))


def _writes(cmd: Command, out: str) -> list:
    """The page's commands before ``cmd`` that write ``--out out``."""
    return [c for c in COMMANDS if c.page == cmd.page and c.line < cmd.line
            and c.option("--out") == out]  # fmt: skip


@pytest.mark.parametrize("cmd", commands_of(PLOT))
def test_plot_follows_its_run(cmd, workdir):
    """PLOT: the flags parse, an earlier command of the page writes the directory."""
    from ctsp.cli import _parser

    args = _parser().parse_args(list(cmd.argv[1:]))
    where = failure(cmd, page_cwd(cmd.page), f"no earlier command writes {args.path}")
    check(_writes(cmd, args.path), where)


@pytest.mark.parametrize("cmd", commands_of(PIP))
def test_install_dry_run(cmd, workdir):
    """PIP: the install as a dry run, offline: metadata builds, extras exist, requirements met."""
    cwd = workdir(cmd.page)
    flags = ["--dry-run", "--no-index", "--no-build-isolation"]
    argv = [*cmd.argv[:2], *flags, *cmd.argv[2:]]
    proc = run_as_written(cmd, cwd, argv, timeout=600)
    ok = proc.returncode == 0 and "Would install ctsp" in proc.stdout
    ok = ok and "does not provide the extra" not in proc.stderr
    check(
        ok,
        failure(
            cmd,
            page_cwd(cmd.page),
            f"{shlex.join(argv)}: exit {proc.returncode}",
            proc.stdout + proc.stderr,
        ),
    )


@pytest.mark.parametrize("cmd", commands_of(SUITE))
def test_suite_command_is_what_ci_runs(cmd, workdir):
    """SUITE: the page's line is run verbatim by .ci/run; pytest starts."""
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    check(cmd.text in ci, failure(cmd, page_cwd(cmd.page), "the line is not in .ci/run"))
    proc = run_as_written(cmd, workdir(cmd.page), ["pytest", "--version"], timeout=120)
    check(proc.returncode == 0, failure(cmd, page_cwd(cmd.page), "pytest --version", proc.stderr))


@pytest.mark.parametrize(("block", "rule"), python_blocks())
def test_python_block_compiles(block, rule):
    compile(block.code, block.where, "exec")


def exec_block(block: Block, namespace: dict, prelude: str = "") -> str | None:
    """Run a python block; None, or the failure with the last lines of the traceback."""
    try:
        if prelude:
            exec(compile(prelude, f"{block.where} (prelude)", "exec"), namespace)
        exec(compile(block.code, block.where, "exec"), namespace)
    except Exception:
        return f"{block.where}: the python block fails:\n{tail(traceback.format_exc())}"
    return None


@pytest.mark.parametrize(("block", "rule"), python_blocks(EXEC, EXEC_SLOW, DEFINE, IMPORTS))
def test_python_block_runs(block, rule, workdir, monkeypatch):
    """EXEC/EXEC_SLOW run as written; DEFINE with the module's names; IMPORTS: the imports."""
    monkeypatch.chdir(workdir(block.page))
    namespace: dict = {"__name__": "__main__"}
    if rule.check == IMPORTS:
        tree = ast.parse(block.code)
        tree.body = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        assert tree.body, f"{block.where}: IMPORTS, but the block imports nothing"
        code = ast.unparse(tree) + "\n"
        block = Block(block.page, block.line, block.kind, tuple(code.splitlines()))
    problem = exec_block(block, namespace, rule.prelude)
    check(problem is None, problem)
    if rule.check == DEFINE:
        classes = [n.name for n in ast.parse(block.code).body if isinstance(n, ast.ClassDef)]
        assert classes and all(isinstance(namespace[c], type) for c in classes)


ORDERED = [p for p in PAGES if IN_ORDER_CLAIM.search((ROOT / p).read_text())]


@pytest.mark.slow
@pytest.mark.parametrize("page", ORDERED)
def test_ordered_page_runs_as_written(page, workdir, monkeypatch, capsys):
    """A page that says its blocks run as written, in this order: so they do, where the page
    runs (the shell commands as subprocesses, the python blocks in one namespace)."""
    cwd = workdir(page)
    monkeypatch.chdir(cwd)
    namespace: dict = {"__name__": "__main__"}
    problems = []
    for block in blocks(page):
        if block.kind == "python":
            problem = exec_block(block, namespace)
            problems += [problem] if problem else []
        elif block.kind == "shell":
            for cmd in [
                c
                for c in COMMANDS
                if c.page == page and c.line - block.line in range(len(block.lines))
            ]:
                proc = run_as_written(cmd, cwd)
                if proc.returncode != 0:
                    what = f"exit {proc.returncode}"
                    problems.append(failure(cmd, page_cwd(page), what, proc.stderr))
    check(not problems, "\n".join(problems))
