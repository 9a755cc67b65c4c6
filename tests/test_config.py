"""Config: TOML round trip, overrides, validation messages."""

import pytest

from ctsp import config as cfg
from ctsp.errors import ConfigError


def test_default_round_trip():
    c = cfg.RunConfig()
    assert cfg.loads(c.to_toml()) == c


def test_round_trip_of_every_bundled_config(tmp_path):
    for name in cfg.bundled_names():
        c = cfg.load(name)
        path = tmp_path / f"{name}.toml"
        path.write_text(c.to_toml())
        assert cfg.load(path) == c


def test_partial_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('name = "x"\n[train]\nbeta = 1\n')
    c = cfg.load(path)
    assert c.name == "x" and c.train.beta == 1.0 and isinstance(c.train.beta, float)
    c2 = cfg.with_overrides(
        c,
        [
            cfg.parse_override("solver.tol=1e-3"),
            cfg.parse_override("solver.method=rk4"),
            cfg.parse_override("train.lr=[0.2, 0.1]"),
        ],
    )
    assert c2.solver.tol == 1e-3 and c2.solver.method == "rk4" and c2.train.lr == (0.2, 0.1)
    assert c2.diff(c) == ["solver.method", "solver.tol", "train.lr"]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"train": {"lrr": 1}}, r"unknown config key 'train\.lrr'; valid keys .*batch_size"),
        ({"bogus": 1}, r"unknown config key 'bogus'; valid keys .*seed"),
        (
            {"train": {"epochs": "ten"}},
            r"wrong type for train\.epochs: 'ten' \(expected an integer",
        ),
        ({"train": {"epochs": 2.5}}, r"wrong type for train\.epochs"),
        ({"train": {"symmetric": 1}}, r"wrong type for train\.symmetric.*true or false"),
        ({"train": {"beta": -1}}, r"invalid value for train\.beta: -1\.0 \(expected > 0\)"),
        ({"train": {"epochs": 0}}, r"invalid value for train\.epochs"),
        (
            {"solver": {"method": "leapfrog"}},
            r"invalid value for solver\.method: 'leapfrog'; valid: euler, .*dopri5",
        ),
        (
            {"solver": {"method": "explicit_adams"}},
            r"solver\.method: 'explicit_adams' is refused: .*diverges.*; valid: euler",
        ),
        (
            {"solver": {"method": "implicit_adams"}},
            r"solver\.method: 'implicit_adams' is refused: .*check_every",
        ),
        ({"network": {"rate": "relu"}}, r"network\.rate: 'relu'; valid: hard_sigmoid"),
        ({"network": {"loop": "maybe"}}, r"network\.loop: 'maybe'; valid: learned, fixed, none"),
        ({"network": {"sizes": [64, 10]}}, r"invalid value for network\.sizes"),
        ({"data": {"name": "imagenet"}}, r"data\.name: 'imagenet'; valid: digits"),
        ({"train": {"lr": [0.1]}}, r"one learning rate per feed-forward projection \(2"),
        ({"device": "tpu"}, r"invalid value for device: 'tpu'"),
        ({"train": 3}, r"expected a \[train\] table"),
        (
            {"solver": {"clamped_duration": 1e6, "step": 0.5}},
            r"solver\.clamped_duration / solver\.step = 1e\+06 / 0\.5 is 2000000 steps per "
            r"phase, more than solver\.max_steps = 100000",
        ),
        ({"solver": {"max_steps": 0}}, r"invalid value for solver\.max_steps"),
        ({"name": "../../escape"}, r"name: '\.\./\.\./escape' \(expected a non-empty name without"),
    ],
)
def test_bad_values_are_named(values, message):
    with pytest.raises(ConfigError, match=message):
        cfg.from_dict(values)


def test_max_steps_admits_a_long_phase_when_raised():
    c = cfg.from_dict({"solver": {"free_duration": 1e6, "max_steps": 2_000_000}})
    assert c.solver.free_duration == 1e6


def test_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(bad)
    with pytest.raises(ConfigError, match="neither a file nor a bundled config"):
        cfg.load(tmp_path / "missing.toml")


def test_override_syntax():
    with pytest.raises(ConfigError, match="not of the form section.key=value"):
        cfg.parse_override("train.beta")
    assert cfg.parse_override("data.name=fashion-mnist") == (["data", "name"], "fashion-mnist")
    with pytest.raises(ConfigError, match="unknown config section 'nope'"):
        cfg.with_overrides(cfg.RunConfig(), [cfg.parse_override("nope.x=1")])
