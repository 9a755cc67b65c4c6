"""Reading a run's checkpoint back, with the resume check."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..config import loads
from ..errors import ConfigError, RunDirError
from .files import CHECKPOINT

# learning-rate schedule keys: a resumed run may change them where the epochs already trained
# keep their learning rates (e.g. a decay added at a milestone the run has not reached)
SCHEDULE_KEYS = ("train.decay", "train.schedule", "train.t_max")


def load_checkpoint(path: Path, config: Any, resumable: tuple[str, ...] = ()) -> dict:
    """Read ``checkpoint.pt`` and refuse a config that differs from the saved one in a key that
    is not ``resumable`` (dotted keys, or prefixes ending in ".") or in the learning-rate
    schedule of the epochs already trained (so that a resumed run repeats an uninterrupted
    run of the new config exactly)."""
    try:
        ckpt = torch.load(path / CHECKPOINT, map_location=config.device, weights_only=False)
        saved = loads(ckpt["config"], str(path / CHECKPOINT), type(config))
    except (OSError, RuntimeError, KeyError, EOFError, ValueError, pickle.UnpicklingError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RunDirError(
            f"cannot read checkpoint {path / CHECKPOINT} (truncated or not a ctsp checkpoint: "
            f"{reason})"
        ) from None
    except ConfigError as e:
        raise RunDirError(
            f"cannot resume {path}: its checkpoint is not from a `ctsp {config.COMMAND}` run ({e})"
        ) from None
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
            f"which the run has trained already ({done} epochs; the schedule follows train.epochs: "
            "to train a long run in parts, keep train.epochs and use --stop-after)"
        )
    return ckpt


