"""Mixed precision of discrete and spiking networks (``train.precision``) and their memory
format.

A network's layers run under ``torch.autocast`` (float16 on CUDA, bfloat16 on the CPU or CUDA):
its matrix products and convolutions in the low type, reductions and losses in float32, the
master weights and the optimizer states in float32 (:func:`autocast`). With float16 every
optimizer has a ``torch.amp.GradScaler`` (:func:`grad_scaler`). :func:`check_precision` refuses
float16 on the CPU; :func:`precision_warning` says when the CPU has no native bfloat16 (no
AVX512-BF16 or AMX: oneDNN then emulates it, several times slower than float32).

Convolutional networks keep their weights and maps channels-last (NHWC, :func:`memory_format`),
the layout oneDNN's convolution kernels prefer, unless they opt out (:func:`uses_channels_last`:
the spiking network); benchmarks/step.py times it against contiguous (NCHW) maps.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import ConfigError
from ..registry import Registry
from .projections import Conv2d

PRECISIONS: Registry[torch.dtype | None] = Registry(
    "precision", {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}
)


def check_precision(precision: str, device: str) -> None:
    """float16 autocast with gradient scaling is a CUDA feature: refuse it on the CPU."""
    if PRECISIONS.check(precision, "train.precision") == "float16" and not device.startswith(
        "cuda"
    ):
        raise ConfigError(
            'train.precision = "float16" needs device = "cuda"; on the CPU use "bfloat16" or '
            '"float32"'
        )


def native_bfloat16_cpu() -> bool:
    """Whether this CPU computes bfloat16 products natively (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch >= 2.1
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def precision_warning(precision: str, device: str) -> str | None:
    """A one-line warning for bfloat16 on a CPU without native bfloat16, else None."""
    if precision != "bfloat16" or device.startswith("cuda") or native_bfloat16_cpu():
        return None
    return (
        'train.precision = "bfloat16": this CPU has no native bfloat16 (no AVX512-BF16 or AMX, '
        f"capability {torch.backends.cpu.get_cpu_capability()}); it is emulated and runs several "
        'times slower than "float32"'
    )


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a null context for float32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def has_convolutions(net: torch.nn.Module) -> bool:
    """Whether ``net`` has convolutional projections."""
    return any(isinstance(m, Conv2d) for m in net.modules())


def uses_channels_last(net: torch.nn.Module) -> bool:
    """Whether ``net``'s weights and maps go channels-last: it has convolutions and does not opt
    out with a class attribute ``channels_last = False`` (the spiking network, whose
    time-stepped layers ran 1.55x slower channels-last than contiguous in benchmarks/step.py)."""
    return has_convolutions(net) and getattr(net, "channels_last", True)


def memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Maps (B, C, H, W) channels-last when ``channels_last`` (a no-op when they already are),
    anything else as it is."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def grad_scaler(precision: str):
    """A gradient scaler for float16 training (CUDA), else None."""
    if precision != "float16":
        return None
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # torch < 2.3
