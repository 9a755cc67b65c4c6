"""Reading a run's checkpoint back, with the resume check."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..config import loads, with_overrides
from ..errors import ConfigError, RunDirError
from .files import CHECKPOINT

# learning-rate schedule keys: a resumed run may change them where the epochs already trained
# keep their learning rates (e.g. a decay added at a milestone the run has not reached)
SCHEDULE_KEYS = ("train.decay", "train.schedule", "train.t_max", "train.schedule_epochs")


def _read(path: Path, config: Any) -> tuple[dict, Any]:
    """The checkpoint in ``path`` and the config it was saved with (one-line errors)."""
    try:
        ckpt = torch.load(path / CHECKPOINT, map_location=config.device, weights_only=False)
        saved = loads(ckpt["config"], str(path / CHECKPOINT), type(config))
    except (
        OSError,
        RuntimeError,
        KeyError,
        EOFError,
        ValueError,
        pickle.UnpicklingError,
        # random bytes can unpickle into any of these, or ask for an impossible allocation
        MemoryError,
        OverflowError,
        TypeError,
        AttributeError,
        IndexError,
    ) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunDirError(
            f"cannot read checkpoint {path / CHECKPOINT} (truncated or not a ctsp checkpoint: "
            f"{reason})"
        ) from None
    except ConfigError as e:
        raise RunDirError(
            f"cannot resume {path}: its checkpoint is not from a `ctsp {config.COMMAND}` run ({e})"
        ) from None
    return ckpt, saved


def resumed_config(path: Path, config: Any) -> Any:
    """The config a run resumed in ``path`` continues with: ``config``, with the saved run's
    learning-rate plan (``train.schedule_epochs``) where ``config`` leaves it unset (0) and
    would plan differently, e.g. ``--resume --epochs 10`` of a 5-epoch run keeps the 5-epoch
    schedule and trains epochs 6-10 at its last rate (``config`` itself when both plans give the
    same rates, e.g. constant ones)."""
    saved = _read(path, config)[1]
    if config.train.schedule_epochs or config.train.plan == saved.train.plan:
        return config
    kept = with_overrides(config, [(["train", "schedule_epochs"], saved.train.plan)])
    factors = [(config.train.lr_factor(e), kept.train.lr_factor(e)) for e in range(kept.train.epochs)]
    return config if all(a == b for a, b in factors) else kept


def load_checkpoint(path: Path, config: Any, resumable: tuple[str, ...] = ()) -> dict:
    """Read ``checkpoint.pt`` and refuse a config that differs from the saved one in a key that
    is not ``resumable`` (dotted keys, or prefixes ending in ".") or in the learning-rate
    schedule of the epochs already trained (so that a resumed run repeats an uninterrupted
    run of the new config exactly)."""
    ckpt, saved = _read(path, config)
    differ = [k for k in config.diff(saved) if not k.startswith(resumable + SCHEDULE_KEYS)]
    if differ:
        raise RunDirError(
            f"cannot resume {path}: the config differs from the saved run in {', '.join(differ)}"
        )
    done = len(ckpt["rows"])
    moved = [e + 1 for e in range(done) if config.train.lr_factor(e) != saved.train.lr_factor(e)]
    if moved:
        raise RunDirError(
            f"cannot resume {path}: the new learning-rate schedule differs in epoch {moved[0]}, "
            f"which the run has trained already ({done} epochs, planned over "
            f"{saved.train.plan}: leave train.schedule_epochs unset to keep that plan)"
        )
    return ckpt


