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
