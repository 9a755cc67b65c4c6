"""Loop alignment angles (paper Fig. 4) and their recorder."""

import numpy as np
import pytest
import torch
import xarray as xr

from analysis.alignment import AlignmentRecorder, loop_angles, loop_weights, paper_names
from ctsp import config as cfg
from ctsp.app import build_layered_network as build_network
from ctsp.app import simulate
from ctsp.cli import main
from ctsp.data import load
from ctsp.errors import ConfigError


def random_loop(sizes, seed=0):
    """Matrices W_k (sizes[k+1], sizes[k]) around a loop of len(sizes) populations."""
    rng = np.random.default_rng(seed)
    n = len(sizes)
    return [rng.standard_normal((sizes[(k + 1) % n], sizes[k])) for k in range(n)]


def direct_angles(ws):
    """Independent formula: follow a basis vector of population k+1 around the loop to k.

    Column j of P_k is the image of e_j (population k+1) after W_{k+1}, …, W_{L-1}, W_0, …,
    W_{k-1}, applied one at a time with explicit loops; then cos = sum_ij A_ij B_ij / (|A| |B|).
    """
    n = len(ws)
    out = []
    for k in range(n):
        n_src, n_dst = ws[k].shape[0], ws[k].shape[1]  # P_k: population k+1 -> population k
        p = np.zeros((n_dst, n_src))
        for j in range(n_src):
            v = np.zeros(n_src)
            v[j] = 1.0
            for step in range(1, n):
                w = ws[(k + step) % n]
                v = np.array(
                    [sum(w[r, c] * v[c] for c in range(w.shape[1])) for r in range(w.shape[0])]
                )
            p[:, j] = v
        wt = ws[k].T
        dot = np.einsum("ij,ij->", wt, p)
        cos = dot / np.sqrt(np.einsum("ij,ij->", wt, wt) * np.einsum("ij,ij->", p, p))
        out.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return np.array(out)


@pytest.mark.parametrize("sizes", [[5, 3], [4, 6, 3], [5, 3, 4, 2]])
def test_against_a_direct_formula(sizes):
    ws = random_loop(sizes, seed=len(sizes))
    got = loop_angles(ws)
    assert got.dtype == np.float64 and got.shape == (len(sizes),)
    np.testing.assert_allclose(got, direct_angles(ws), atol=1e-9)


def test_paper_convention_three_matrices():
    """In row-vector notation (W1 = ff1^T, W2 = ff2^T, W3 = loop^T) angle 1 is W2 vs W3 W1."""
    ff1, ff2, loop = random_loop([4, 6, 3], seed=7)
    w1, w2, w3 = ff1.T, ff2.T, loop.T  # s2 <- s1 W1, s3 <- s2 W2, s1 <- s3 W3

    def angle(a, b):
        assert a.shape == b.shape
        cos = (a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b)
        return np.degrees(np.arccos(cos))

    expected = [angle(w1.T, w2 @ w3), angle(w2.T, w3 @ w1), angle(w3.T, w1 @ w2)]
    np.testing.assert_allclose(loop_angles([ff1, ff2, loop]), expected, atol=1e-9)
    assert paper_names(3) == ["W2W3∠W1", "W3W1∠W2", "W1W2∠W3"]
    assert paper_names(2) == ["W2∠W1", "W1∠W2"]
    assert paper_names(4)[1] == "W3W4W1∠W2"


def test_torch_and_numpy_agree_and_scaling_is_invariant():
    ws = random_loop([7, 5, 6, 4], seed=1)
    base = loop_angles(ws)
    np.testing.assert_allclose(
        loop_angles([torch.tensor(w, dtype=torch.float32) for w in ws]), base, atol=1e-4
    )
    for k, scale in [(0, 3.0), (2, 1e-3), (3, 250.0)]:
        scaled = [w * scale if i == k else w for i, w in enumerate(ws)]
        np.testing.assert_allclose(loop_angles(scaled), base, atol=1e-9)
    # a negative scale of one matrix flips every angle to its supplement
    flipped = [-ws[0], *ws[1:]]
    np.testing.assert_allclose(loop_angles(flipped), 180 - base, atol=1e-9)


@pytest.mark.parametrize("sizes", [[6, 4], [6, 4, 5], [3, 5, 4, 6]])
def test_an_exactly_aligned_loop_gives_zero(sizes):
    """A loop built so that W_k^T is a positive multiple of the path P_k through the others.

    W_k = c_k U_{k+1} U_k^T with U_k (n_k, r) orthonormal columns (U_k^T U_k = I_r), so
    P_k = (prod of c_j, j != k) U_k U_{k+1}^T, a positive multiple of W_k^T.
    """
    rng = np.random.default_rng(len(sizes))
    r = min(sizes)
    us = [np.linalg.qr(rng.standard_normal((n, r)))[0] for n in sizes]
    n = len(sizes)
    ws = [2.5 * (k + 1) * us[(k + 1) % n] @ us[k].T for k in range(n)]  # positive scales
    np.testing.assert_allclose(loop_angles(ws), 0.0, atol=1e-5)
    ws[1] = -ws[1]
    np.testing.assert_allclose(loop_angles(ws), 180.0, atol=1e-5)


def test_large_random_matrices_are_near_90_degrees():
    ws = random_loop([300, 200, 250], seed=3)
    angles = loop_angles(ws)
    assert np.all(np.abs(angles - 90) < 3), angles


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least 2"):
        loop_angles([np.ones((3, 3))])
    with pytest.raises(ValueError, match="do not chain"):
        loop_angles([np.ones((3, 4)), np.ones((3, 3))])
    assert np.isnan(loop_angles([np.zeros((2, 3)), np.ones((3, 2))])).all()


def test_loop_weights_of_the_network_follow_the_loop():
    net = build_network(
        cfg.from_dict({"network": {"sizes": [64, 32, 16, 10]}, "train": {"lr": [0.1, 0.05, 0.05]}})
    )
    names, ws = loop_weights(net)
    assert names == ["ff1", "ff2", "loop"]
    assert [tuple(w.shape) for w in ws] == [(16, 32), (10, 16), (32, 10)]
    none = build_network(cfg.from_dict({"network": {"loop": "none"}}))
    with pytest.raises(ConfigError, match="loop-back"):
        loop_weights(none)


def digits_config(epochs=1, every=9, loop="learned"):
    return cfg.from_dict(
        {
            "network": {"sizes": [64, 32, 16, 10], "loop": loop},
            "train": {"epochs": epochs, "lr": [0.1, 0.05, 0.05]},
            "record": {"alignment_every": every},
        }
    )


QUIET = {"progress": False, "log": lambda s: None}


def test_recorder_writes_alignment_nc_during_a_digits_run(tmp_path):
    result = simulate(digits_config(1, every=9), tmp_path / "run", **QUIET)
    ds = xr.open_dataset(result.path / "alignment.nc", engine="scipy")
    assert ds.angle.dims == ("step", "weight")
    n_batches = -(-load("digits").train_x.shape[0] // 20)
    assert ds.step.values.tolist() == list(range(9, n_batches + 1, 9))
    np.testing.assert_allclose(ds.epoch_progress, ds.step / n_batches)
    assert ds.weight.values.tolist() == ["ff1", "ff2", "loop"]
    assert ds.label.values.tolist() == ["W2W3∠W1", "W3W1∠W2", "W1W2∠W3"]
    assert ds.epoch.dims == ("step",) and set(ds.epoch.values.tolist()) == {1}
    assert ds.angle.attrs["units"] == "degree"
    assert ((ds.angle > 0) & (ds.angle < 180)).all()
    # the last record is the trained network's angles
    np.testing.assert_allclose(ds.angle.values[-1], loop_angles(loop_weights(result.network)[1]))
    ds.close()


def test_resumed_run_continues_the_record(tmp_path):
    full = simulate(digits_config(2, every=10), tmp_path / "full", **QUIET)
    simulate(digits_config(1, every=10), tmp_path / "part", **QUIET)
    resumed = simulate(digits_config(2, every=10), tmp_path / "part", resume=True, **QUIET)
    a = xr.open_dataset(full.path / "alignment.nc", engine="scipy").load()
    b = xr.open_dataset(resumed.path / "alignment.nc", engine="scipy").load()
    assert set(a.epoch.values.tolist()) == {1, 2}
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    # a run that recorded nothing before the resume numbers its steps from the run's start
    simulate(digits_config(1, every=0), tmp_path / "late", **QUIET)
    late = simulate(digits_config(2, every=10), tmp_path / "late", resume=True, **QUIET)
    c = xr.open_dataset(late.path / "alignment.nc", engine="scipy").load()
    n_batches = int(a.attrs["batches_per_epoch"])
    assert set(c.epoch.values.tolist()) == {2} and c.step.values[-1] <= 2 * n_batches
    assert c.step.values.tolist() == [n_batches + k for k in range(10, n_batches + 1, 10)]


def test_loop_none_is_refused():
    neither = "network.loop is 'none' and network.feedback is 'none'"
    with pytest.raises(ConfigError, match=neither) as e:
        AlignmentRecorder(digits_config(loop="none"))
    assert "\n" not in str(e.value)


def test_cli_set_alignment_every(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["simulate", "--no-progress", "--epochs", "1", "--out", str(out)]
    code = main([*argv, "--set", "record.alignment_every=25"])
    assert code == 0
    ds = xr.open_dataset(out / "alignment.nc", engine="scipy")
    assert ds.step.values.tolist()[:2] == [25, 50]
    assert ds.weight.values.tolist() == ["ff1", "loop"]  # default digits net: 64-256-10
    ds.close()
    none = ["--out", str(tmp_path / "none"), "--set", "network.loop=none"]
    code = main(["simulate", "--no-progress", *none, "--set", "record.alignment_every=5"])
    assert code == 2
    assert "network.loop is 'none'" in capsys.readouterr().err


def _alignment_epochs(out):
    with xr.open_dataset(out / "alignment.nc", engine="scipy") as ds:
        return sorted(set(ds.epoch.values.tolist()))


def test_switching_trajectories_off_on_resume_keeps_the_alignment_record(tmp_path):
    """Recorder states are keyed by name: with record.trajectories on in part one and off on
    resume, the alignment recorder gets its own state back (it used to get the trajectory
    recorder's, by position, reset, and lose epoch 1)."""
    out = tmp_path / "run"
    common = ["--epochs", "2", "--set", "record.alignment_every=20", "--out", str(out)]
    quiet = ["--no-progress"]
    assert main(["simulate", *common, "--record", "2", "--stop-after", "1", *quiet]) == 0
    assert _alignment_epochs(out) == [1]
    assert main(["simulate", *common, "--record", "0", "--resume", *quiet]) == 0
    assert _alignment_epochs(out) == [1, 2]


def test_force_removes_a_stale_alignment_file(tmp_path):
    out = tmp_path / "run"
    args = ["simulate", "--epochs", "1", "--out", str(out), "--no-progress"]
    assert main([*args, "--set", "record.alignment_every=20"]) == 0
    assert (out / "alignment.nc").is_file()
    assert main([*args, "--force"]) == 0
    assert not (out / "alignment.nc").exists()
