"""Every family on ``--device cuda`` (issue 30): skipped without a GPU (the development and CI
machines have none); ``benchmarks/gpu_check.sh`` runs them where a GPU is lent. Each trains a
small seeded run on digits on the GPU and checks it against the same run on the CPU (float32)
or against learning at all (reduced precision)."""

import pytest
import torch
import xarray as xr

from ctsp.cli import main

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

FC = ["train", "--epochs", "2", "--set", "data.validation=0", "--no-progress"]
SIMULATE = ["simulate", "--epochs", "2", "--set", "data.validation=0", "--no-progress"]
# the steady solver with a tolerance (its test read a sweep late on the GPU), on EP's network
STEADY = ["simulate", "ep-digits", "--epochs", "2", "--solver", "steady", "--no-progress"]
STEADY += ["--set", "solver.tol=1e-3", "--set", "solver.max_sweeps=30"]
SNN = ["train", "snn-fmnist-sp-surrogate", "--dataset", "digits", "--epochs", "2"]
SNN += ["--set", "data.validation=0", "--set", "model.channels=[4,4]", "--no-progress"]
VGG = ["train", "vgg8b-fmnist", "--dataset", "digits", "--epochs", "4", "--no-progress"]
VGG += ["--set", "data.crop=0", "--set", "data.validation=0", "--set", "model.hidden=[64]"]


def _final(path, name="test_error") -> float:
    return float(xr.load_dataset(path / "metrics.nc")[name][-1])


@pytest.mark.parametrize("argv", [FC, SIMULATE, STEADY], ids=["discrete", "continuous", "steady"])
def test_a_float32_run_on_the_gpu_equals_the_cpu_run_to_rounding(argv, tmp_path):
    for device in ("cpu", "cuda"):
        assert main([*argv, "--device", device, "--out", str(tmp_path / device)]) == 0
    assert abs(_final(tmp_path / "cpu") - _final(tmp_path / "cuda")) <= 0.02


@pytest.mark.parametrize(
    "argv, precision",
    [(FC, "bfloat16"), (FC, "float16"), (SNN, "float16"), (SNN, "bfloat16")],
    ids=["fc-bfloat16", "fc-float16", "snn-float16", "snn-bfloat16"],
)
def test_reduced_precision_learns_on_the_gpu(argv, precision, tmp_path):
    """float16 with its gradient scaler, bfloat16 without: below chance after 2 epochs."""
    out = tmp_path / precision
    argv = [*argv, "--device", "cuda", "--set", f"train.precision={precision}"]
    assert main([*argv, "--out", str(out)]) == 0
    assert _final(out) < 0.8


def test_vgg8b_bfloat16_on_the_gpu_learns_as_float32(tmp_path):
    """The fidelity gate of tests/test_precision.py on the GPU."""
    deep = {}
    for precision in ("float32", "bfloat16"):
        out = tmp_path / precision
        argv = [*VGG, "--device", "cuda", "--set", f"train.precision={precision}"]
        assert main([*argv, "--out", str(out)]) == 0
        deep[precision] = xr.load_dataset(out / "metrics.nc").test_exit_error.values[-1][1:7]
    assert abs(float(deep["bfloat16"].mean() - deep["float32"].mean())) <= 0.04
