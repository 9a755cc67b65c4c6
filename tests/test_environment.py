"""The environment variables ctsp reads: parsed and validated like config keys."""

import pytest

from ctsp.cli import main
from ctsp.environment import VARIABLES, check, read
from ctsp.errors import ConfigError

BAD = {
    "CTSP_DEBUG": "maybe",
    "CTSP_DATA": "/nonexistent/ctsp-data",
    "CTSP_DATA_URL": "ftp://example.org/data",
    "CTSP_HANG_TIMEOUT": "nan",
    "RANK": "-1",
    "WORLD_SIZE": "0",
}


def test_every_variable_has_a_bad_value_here():
    assert sorted(BAD) == sorted(VARIABLES)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_is_refused_in_one_line_naming_the_variable(name, monkeypatch, capsys):
    monkeypatch.setenv(name, BAD[name])
    with pytest.raises(ConfigError, match=rf"environment variable {name}: '.*' \(expected "):
        read(name)
    assert main(["configs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ctsp: error: invalid value for the "), err


@pytest.mark.parametrize(
    "name, text, value",
    [
        ("CTSP_DEBUG", "", False),
        ("CTSP_DEBUG", "0", False),
        ("CTSP_DEBUG", "Yes", True),
        ("CTSP_HANG_TIMEOUT", "", 60.0),
        ("CTSP_HANG_TIMEOUT", "4", 4.0),
        ("CTSP_DATA_URL", "file:///srv/data", "file:///srv/data"),
        ("RANK", "3", 3),
        ("WORLD_SIZE", "", 1),
    ],
)
def test_values_and_defaults(name, text, value, monkeypatch):
    monkeypatch.setenv(name, text)
    assert read(name) == value


@pytest.mark.parametrize("seconds", ["0.001", "2.9", "inf", "-5", "soon"])
def test_a_hang_timeout_that_would_stop_healthy_runs_or_none_is_refused(seconds, monkeypatch):
    monkeypatch.setenv("CTSP_HANG_TIMEOUT", seconds)
    with pytest.raises(ConfigError, match="CTSP_HANG_TIMEOUT"):
        check()


def test_help_lists_every_variable(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in VARIABLES)


def test_a_rank_outside_the_world_is_refused(monkeypatch):
    from ctsp.parallel import World

    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK=2 is not below WORLD_SIZE=2"):
        World.from_environment()
    monkeypatch.setenv("RANK", "1")
    world = World.from_environment()
    assert (world.rank, world.size) == (1, 2)
