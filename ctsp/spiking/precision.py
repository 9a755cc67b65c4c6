"""Mixed precision of spiking networks (``train.precision``): the layers run under
``torch.autocast`` (float16 on CUDA, bfloat16 on CPU or CUDA); the losses and comparisons are
computed in float32 outside it; with float16 every optimizer has a ``torch.amp.GradScaler``.
The configuration refuses float16 on the CPU (:func:`check_precision`)."""

from __future__ import annotations

import contextlib

import torch

from ..errors import ConfigError
from ..registry import Registry

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


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` on ``device`` (a null context for float32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str):
    """A gradient scaler for float16 training (CUDA), else None."""
    if precision != "float16":
        return None
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()  # torch < 2.3
