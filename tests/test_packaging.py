"""environment.yml lists the same dependencies as pyproject.toml."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}


def _split(spec: str) -> tuple[str, str]:
    name, version = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", spec.strip()).groups()
    return CONDA_NAMES.get(name.lower(), name.lower()), version.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(
        _split(s) for s in project["dependencies"] + project["optional-dependencies"]["test"]
    )
    listed = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"\s+-\s+([^#\s].*)$", line)
        if m and not m.group(1).startswith(("python", "pip")):
            name, version = _split(m.group(1))
            listed[name] = version
    assert listed == wanted


def test_layout_requested_by_the_user():
    for folder in ("ctsp", "models", "analysis", "figures", "tests", "benchmarks", "docs"):
        assert (ROOT / folder).is_dir(), folder
    assert (ROOT / "environment.yml").is_file()


def test_ruff_passes():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_api_resolves_and_help_stays_light():
    import subprocess
    import sys

    import ctsp

    for name in ctsp.__all__:
        assert getattr(ctsp, name) is not None, name
    code = "import sys, ctsp.cli; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layering_contracts_hold():
    """import-linter's contracts in pyproject.toml: the layers of ctsp, no cycles between them,
    no import of models or analysis from ctsp's core, none of the application edge from
    analysis or models."""
    import shutil
    import subprocess

    exe = shutil.which("lint-imports")
    assert exe, "lint-imports (import-linter, a test dependency) is not installed"
    proc = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout and "4 kept" in proc.stdout


def test_no_module_reaches_into_the_old_flat_layout():
    """The flat modules are gone in favour of the subpackages."""
    flat = ("layers", "spiking", "simulate", "solver", "dynamics", "signals", "baselines", "data")
    for old in flat:
        assert not (ROOT / "ctsp" / f"{old}.py").exists(), old


MAX_LINES = 60  # a function's lines, its docstring not counted
MAX_COMPLEXITY = 15  # radon's cyclomatic complexity


def _too_long_or_tangled(paths: list[Path]) -> list[str]:
    """Every function of ``paths`` over MAX_LINES lines (its docstring not counted) or over
    MAX_COMPLEXITY (radon's cyclomatic complexity), one line each."""
    import ast

    from radon.complexity import cc_visit

    found = []
    for path in paths:
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    if isinstance(first.value.value, str):
                        lines -= first.end_lineno - first.lineno + 1
                if lines > MAX_LINES:
                    found.append(f"{path}:{node.lineno} {node.name}: {lines} lines")
        found += [f"{path}:{b.lineno} {b.name}: complexity {b.complexity}"
                  for b in cc_visit(text) if b.complexity > MAX_COMPLEXITY]  # fmt: skip
    return found


def test_every_function_is_short_and_simple():
    """No function in ctsp/ is longer than MAX_LINES or more complex than MAX_COMPLEXITY: a
    longer one is two functions."""
    found = _too_long_or_tangled(sorted((ROOT / "ctsp").rglob("*.py")))
    assert not found, "\n".join(found)


def test_the_function_check_finds_a_long_and_a_tangled_function(tmp_path):
    branches = "\n".join(f"    if x == {k}:\n        return {k}" for k in range(MAX_COMPLEXITY))
    body = "\n".join(f"    y{k} = {k}" for k in range(MAX_LINES - 1))  # and the def line
    module = tmp_path / "m.py"
    module.write_text(  # short: as long as allowed, its docstring not counted
        f'def tangled(x):\n{branches}\n\n\ndef short():\n    """doc\n    doc."""\n{body}\n'
        f"\n\ndef long():\n{body}\n    return 0\n"
    )
    found = _too_long_or_tangled([module])
    assert [line.split(" ", 1)[1] for line in found] == [
        f"long: {MAX_LINES + 1} lines",
        f"tangled: complexity {MAX_COMPLEXITY + 1}",
    ], found
