"""Tests of ctsp.continuous.plasticity: contrastive Hebbian weight/bias updates (Eq. 14)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from ctsp.continuous import BACKENDS, chl_bias_update, chl_update, plasticity

DTYPES = (torch.float32, torch.float64)
# (n_post, n_pre, batch): odd sizes, not multiples of any block size, B=1, 1x1.
SHAPES = ((7, 13, 5), (1, 1, 1), (13, 7, 1), (3, 1, 9), (1, 5, 2), (37, 29, 11), (1501, 785, 3))
KINDS = ("dense", "saturated")


def _tol(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 1e-12


def _make(n_post, n_pre, batch, dtype, kind, seed=0):
    """Seeded (weight, pre, post_free, post_nudged) torch tensors."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((n_post, n_pre)) * 0.1
    if kind == "dense":
        pre = rng.random((batch, n_pre))
        free = rng.random((batch, n_post))
        nudged = rng.random((batch, n_post))
    elif kind == "saturated":
        # Hard-sigmoid rates of wide pre-activations: most neurons sit at exactly 0 or 1
        # in both phases, so most differences are exactly zero.
        pre = np.clip(rng.normal(0.5, 5.0, (batch, n_pre)), 0.0, 1.0)
        s_free = rng.normal(0.5, 5.0, (batch, n_post))
        free = np.clip(s_free, 0.0, 1.0)
        nudged = np.clip(s_free + rng.normal(0.0, 0.5, (batch, n_post)), 0.0, 1.0)
    else:  # pragma: no cover
        raise AssertionError(kind)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return t(weight), t(pre), t(free), t(nudged)


def _reference(weight, pre, free, nudged, scale):
    """Independent float64 numpy reference: W + scale * (nudged - free).T @ pre."""
    w = weight.numpy().astype(np.float64)
    diff = nudged.numpy().astype(np.float64) - free.numpy().astype(np.float64)
    return w + scale * diff.T @ pre.numpy().astype(np.float64)


def _assert_close(actual, expected, rtol):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    err = np.abs(actual - expected).max(initial=0.0)
    bound = rtol * max(np.abs(expected).max(initial=0.0), 1e-30)
    assert err <= bound, f"max abs error {err:.3e} > {bound:.3e}"


def _run(backend, weight, pre, free, nudged, scale):
    w = weight.clone()
    chl_update(w, pre, free, nudged, scale, backend=backend)
    return w


# ----------------------------------------------------------------------------- correctness


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", KINDS)
def test_backends_match_float64_reference(kind, shape, dtype):
    n_post, n_pre, batch = shape
    weight, pre, free, nudged = _make(n_post, n_pre, batch, dtype, kind)
    scale = 0.5 / batch
    ref = _reference(weight, pre, free, nudged, scale)
    ref_delta = ref - weight.numpy().astype(np.float64)
    results = {b: _run(b, weight, pre, free, nudged, scale).numpy() for b in BACKENDS}
    tol = _tol(dtype)
    for backend, w in results.items():
        assert w.dtype == weight.numpy().dtype, backend
        _assert_close(w, ref, tol)
        # The update itself (not just W + small update) must match too.
        _assert_close(w.astype(np.float64) - weight.numpy(), ref_delta, 10 * tol)
    _assert_close(results["numba"], results["torch"], tol)
    _assert_close(results["auto"], results["torch"], tol)


def test_saturated_inputs_are_mostly_exact_zeros():
    _, _, free, nudged = _make(1501, 785, 3, torch.float32, "saturated")
    density = torch.count_nonzero(nudged - free).item() / free.numel()
    assert density < 0.3


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_difference_rows_are_bit_identical(backend, dtype):
    weight, pre, free, nudged = _make(41, 23, 6, dtype, "dense", seed=3)
    zero_rows = [0, 7, 40]
    nudged[:, zero_rows] = free[:, zero_rows]
    # Scattered exact zeros elsewhere must not change the other rows' results.
    nudged[2, 5] = free[2, 5]
    nudged[0, 9] = free[0, 9]
    w = _run(backend, weight, pre, free, nudged, 0.3)
    assert torch.equal(w[zero_rows], weight[zero_rows])
    other = [j for j in range(41) if j not in zero_rows]
    assert not torch.equal(w[other], weight[other])
    _assert_close(w, _reference(weight, pre, free, nudged, 0.3), _tol(dtype))


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_zero_difference_leaves_weight_unchanged(backend):
    weight, pre, free, _ = _make(17, 9, 4, torch.float32, "dense")
    w = _run(backend, weight, pre, free, free.clone(), 1.0)
    assert torch.equal(w, weight)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_auto_follows_the_fixed_density_rule_and_matches_the_reference(dtype):
    """ "auto" picks numba iff fewer than AUTO_DENSITY of the differences are nonzero (and the
    projection has AUTO_MIN_PRE presynaptic neurons), torch otherwise; either way W is right."""
    n_post, n_pre, batch = 19, plasticity.AUTO_MIN_PRE, 40
    weight, pre, free, nudged = _make(n_post, n_pre, batch, dtype, "dense", seed=5)
    diff = nudged - free
    rank = torch.arange(diff.numel(), dtype=torch.float64).reshape(diff.shape) / diff.numel()
    for density, backend in (
        (plasticity.AUTO_DENSITY - 0.01, "numba"),
        (plasticity.AUTO_DENSITY, "torch"),
        (1.0, "torch"),
    ):
        sparse = torch.where(rank < density, nudged, free)  # the first `density` nonzero
        assert plasticity.auto_backend(weight, sparse - free) == backend, density
        w = _run("auto", weight, pre, free, sparse, 0.1)
        _assert_close(w, _reference(weight, pre, free, sparse, 0.1), _tol(dtype))
    narrow = weight[:, : n_pre - 1].contiguous()
    assert plasticity.auto_backend(narrow, torch.zeros(batch, n_post, dtype=dtype)) == "torch"
    # a projection of AUTO_LARGE weights uses numba up to AUTO_DENSITY_LARGE
    large = torch.zeros(plasticity.AUTO_LARGE // 1000, 1000, dtype=dtype)
    diff = torch.zeros(4, large.shape[0], dtype=dtype)
    diff.view(-1)[: int(0.6 * diff.numel())] = 1.0
    assert plasticity.AUTO_DENSITY < 0.6 < plasticity.AUTO_DENSITY_LARGE
    assert plasticity.auto_backend(large, diff) == "numba"
    diff.fill_(1.0)
    assert plasticity.auto_backend(large, diff) == "torch"


@pytest.mark.slow  # two fresh processes, 10 s
def test_auto_is_reproducible_across_processes():
    """Two fresh processes give bitwise equal updates with "auto" (no timing decides)."""
    code = (
        "import torch; from ctsp.continuous import chl_update\n"
        "g = torch.Generator().manual_seed(0)\n"
        "w = torch.rand(300, 200, generator=g); pre = torch.rand(20, 200, generator=g)\n"
        "free = torch.rand(20, 300, generator=g)\n"
        "nudged = torch.where(torch.rand(20, 300, generator=g) < 0.3, free + 0.1, free)\n"
        "chl_update(w, pre, free, nudged, 0.01)\n"
        "print(w.double().sum().item().hex(), w.view(torch.int32).sum().item())\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and runs[0]


@pytest.mark.slow  # a fresh process
def test_numba_kernel_keeps_the_thread_count_torch_has():
    """A fresh process: torch set to one thread, its pool started by a product; the numba
    kernel then runs on one thread too and leaves torch's count alone (numba's default launch
    would set the shared OpenMP count to one thread per core)."""
    code = (
        "import numba, torch; from ctsp.continuous import chl_update\n"
        "torch.set_num_threads(1)\n"
        "x = torch.rand(300, 300); x @ x; torch.rand(20, 4000).abs()\n"
        "w = torch.zeros(1500, 784); pre = torch.rand(20, 784); free = torch.rand(20, 1500)\n"
        "chl_update(w, pre, free, free + 0.1, 0.01, backend='numba')\n"
        "print(torch.get_num_threads(), numba.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "1"]


def test_auto_uses_torch_for_non_numba_dtypes():
    weight = torch.zeros(3, 2, dtype=torch.bfloat16)
    assert plasticity.auto_backend(weight, torch.ones(4, 3, dtype=torch.bfloat16)) == "torch"
    chl_update(weight, torch.ones(4, 2, dtype=torch.bfloat16), *_ones_zeros(4, 3), 0.25)
    assert torch.equal(weight, torch.ones(3, 2, dtype=torch.bfloat16))


def _ones_zeros(batch, n_post):
    return (
        torch.zeros(batch, n_post, dtype=torch.bfloat16),
        torch.ones(batch, n_post, dtype=torch.bfloat16),
    )


# ----------------------------------------------------------------------------- in place


@pytest.mark.parametrize("backend", BACKENDS)
def test_update_is_in_place(backend):
    weight, pre, free, nudged = _make(12, 10, 4, torch.float32, "dense")
    w = weight.clone()
    alias = w.view(-1)
    ptr = w.data_ptr()
    chl_update(w, pre, free, nudged, 0.2, backend=backend)
    assert w.data_ptr() == ptr
    assert torch.equal(alias.view(12, 10), w)
    _assert_close(alias.view(12, 10), _reference(weight, pre, free, nudged, 0.2), 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_parameter_requiring_grad(backend):
    weight, pre, free, nudged = _make(6, 5, 3, torch.float64, "dense")
    param = torch.nn.Parameter(weight.clone())
    chl_update(param, pre, free, nudged, 0.2, backend=backend)
    _assert_close(param.detach(), _reference(weight, pre, free, nudged, 0.2), 1e-12)
    assert param.requires_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_weight_updated_in_its_storage(backend):
    weight, pre, free, nudged = _make(8, 6, 3, torch.float32, "dense")
    storage = weight.T.contiguous()  # (6, 8); its transpose is a non-contiguous (8, 6) view
    view = storage.T
    assert not view.is_contiguous()
    chl_update(view, pre, free, nudged, 0.2, backend=backend)
    _assert_close(storage.T, _reference(weight, pre, free, nudged, 0.2), 1e-5)


def test_empty_batch_is_a_no_op():
    weight = torch.ones(3, 2)
    for backend in BACKENDS:
        chl_update(weight, torch.ones(0, 2), torch.ones(0, 3), torch.ones(0, 3), 1.0, backend)
    assert torch.equal(weight, torch.ones(3, 2))


# ----------------------------------------------------------------------------- bias


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_bias_update_matches_numpy(kind, dtype):
    _, _, free, nudged = _make(23, 3, 9, dtype, kind, seed=7)
    bias = torch.from_numpy(np.random.default_rng(1).standard_normal(23)).to(dtype)
    b = bias.clone()
    ptr = b.data_ptr()
    chl_bias_update(b, free, nudged, 0.25)
    assert b.data_ptr() == ptr
    ref = bias.numpy().astype(np.float64) + 0.25 * (
        nudged.numpy().astype(np.float64) - free.numpy().astype(np.float64)
    ).sum(0)
    _assert_close(b, ref, _tol(dtype))


def test_bias_update_rejects_bad_arguments():
    bias = torch.zeros(4)
    with pytest.raises(ValueError, match="post_free"):
        chl_bias_update(bias, torch.zeros(3, 5), torch.zeros(3, 4), 1.0)
    with pytest.raises(ValueError, match="post_nudged"):
        chl_bias_update(bias, torch.zeros(3, 4), torch.zeros(2, 4), 1.0)
    with pytest.raises(ValueError, match="dtype"):
        chl_bias_update(bias, torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 4), 1.0)
    with pytest.raises(ValueError, match="bias"):
        chl_bias_update(torch.zeros(4, 1), torch.zeros(3, 4), torch.zeros(3, 4), 1.0)


# ----------------------------------------------------------------------------- errors


def _good():
    return torch.zeros(4, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4)


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError, match="backend") as info:
        chl_update(*_good(), 1.0, backend="cuda")
    for name in BACKENDS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("position", "bad", "name"),
    [
        (0, torch.zeros(4, 3, 1), "weight"),
        (1, torch.zeros(2, 5), "pre"),
        (1, torch.zeros(6), "pre"),
        (2, torch.zeros(2, 5), "post_free"),
        (3, torch.zeros(2, 5), "post_nudged"),
        (3, torch.zeros(3, 4), "post_nudged"),
        (2, torch.zeros(3, 4), "post_"),  # batch of both posts differs from pre
    ],
)
def test_shape_mismatch_names_argument(position, bad, name):
    args = list(_good())
    args[position] = bad
    with pytest.raises(ValueError, match=name) as info:
        chl_update(*args, 1.0, backend="torch")
    assert "shape" in str(info.value) or "batch" in str(info.value) or "-D" in str(info.value)


def test_batch_mismatch_between_pre_and_post():
    w, _, free, nudged = _good()
    with pytest.raises(ValueError, match="batch size"):
        chl_update(w, torch.zeros(3, 3), free, nudged, 1.0)


@pytest.mark.parametrize("position", [1, 2, 3])
def test_dtype_mismatch_names_argument(position):
    args = list(_good())
    args[position] = args[position].double()
    name = ("weight", "pre", "post_free", "post_nudged")[position]
    with pytest.raises(ValueError, match=f"{name} has dtype torch.float64"):
        chl_update(*args, 1.0)


def test_integer_weight_rejected():
    _, pre, free, nudged = _good()
    with pytest.raises(ValueError, match="floating"):
        chl_update(
            torch.zeros(4, 3, dtype=torch.int64), pre.long(), free.long(), nudged.long(), 1.0
        )


def test_non_tensor_and_bad_scale_rejected():
    w, pre, free, nudged = _good()
    with pytest.raises(ValueError, match="pre must be a torch.Tensor"):
        chl_update(w, pre.numpy(), free, nudged, 1.0)
    with pytest.raises(ValueError, match="scale"):
        chl_update(w, pre, free, nudged, "0.1")


def test_numba_rejects_unsupported_dtype():
    args = [t.half() for t in _good()]
    with pytest.raises(ValueError, match="float32 and float64"):
        chl_update(*args, 1.0, backend="numba")


def test_numba_rejects_non_cpu_tensors():
    args = [torch.empty(t.shape, device="meta") for t in _good()]
    with pytest.raises(ValueError, match="CPU only"):
        chl_update(*args, 1.0, backend="numba")


def test_device_mismatch_names_argument():
    w, pre, free, nudged = _good()
    with pytest.raises(ValueError, match="pre is on device meta"):
        chl_update(w, torch.empty(2, 3, device="meta"), free, nudged, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():  # pragma: no cover - CPU-only CI
    args = [t.cuda() for t in _make(9, 7, 3, torch.float32, "dense")]
    with pytest.raises(ValueError, match="CPU only"):
        chl_update(*[a.clone() for a in args], 1.0, backend="numba")
    ref = _reference(*[a.cpu() for a in args], 0.1)
    for backend in ("auto", "torch"):
        w = args[0].clone()
        chl_update(w, *args[1:], 0.1, backend=backend)
        _assert_close(w.cpu(), ref, 1e-5)


# ----------------------------------------------------------------------------- import


def test_import_compiles_nothing():
    code = (
        "import ctsp.continuous.plasticity as p\n"
        "assert p.chl_kernel.signatures == [], p.chl_kernel.signatures\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
