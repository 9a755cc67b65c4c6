"""Reading a run's checkpoint back, with the resume check."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..config import loads, with_overrides
from ..errors import ConfigError, RunDirError
from .files import CHECKPOINT

# the entries every checkpoint of a run holds (the trainer's extra state besides)
ENTRIES = ("model", "rows", "best", "config")
# what reading a checkpoint that is not one of a ctsp run can raise
NOT_A_CHECKPOINT = (
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
)

# learning-rate schedule keys: a resumed run may change them where the epochs already trained
# keep their learning rates (e.g. a decay added at a milestone the run has not reached)
SCHEDULE_KEYS = ("train.decay", "train.schedule", "train.t_max", "train.schedule_epochs")


def _read(path: Path, config: Any) -> tuple[dict, Any]:
    """The checkpoint in ``path`` and the config it was saved with (one-line errors)."""
    try:
        ckpt = torch.load(path / CHECKPOINT, map_location=config.device, weights_only=False)
        missing = [k for k in ENTRIES if k not in ckpt] if isinstance(ckpt, dict) else ENTRIES
        if missing:
            raise KeyError(f"no {missing[0]!r} entry")
        saved = loads(ckpt["config"], str(path / CHECKPOINT), type(config))
    except NOT_A_CHECKPOINT as e:
        raise not_a_checkpoint(path, e) from None
    except ConfigError as e:
        raise RunDirError(
            f"cannot resume {path}: its checkpoint is not from a `ctsp {config.COMMAND}` run ({e})"
        ) from None
    return ckpt, saved


def not_a_checkpoint(path: Path, e: BaseException) -> RunDirError:
    """The one-line error for a checkpoint that cannot be read or restored."""
    reason = str(e).splitlines()[0].strip("'\"") if str(e) else type(e).__name__
    return RunDirError(
        f"cannot read checkpoint {path / CHECKPOINT} (truncated or not a ctsp checkpoint: "
        f"{reason})"
    )


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
    if config.train.epochs < done:
        raise RunDirError(
            f"cannot resume {path} with train.epochs = {config.train.epochs}: it has trained "
            f"{done} epochs already (resume with --epochs {done} or more; a shorter run is a "
            "new run)"
        )
    moved = [e + 1 for e in range(done) if config.train.lr_factor(e) != saved.train.lr_factor(e)]
    if moved:
        raise RunDirError(
            f"cannot resume {path}: the new learning-rate schedule differs in epoch {moved[0]}, "
            f"which the run has trained already ({done} epochs, planned over "
            f"{saved.train.plan}: leave train.schedule_epochs unset to keep that plan)"
        )
    return ckpt




def restore(path: Path, trainer: Any, ckpt: dict) -> tuple[list, dict, dict]:
    """Load the network and the trainer's state of ``ckpt`` (read from ``path``) into
    ``trainer``; the epoch rows, the best model's entry and the recorders' states by name.
    A checkpoint whose entries do not fit is refused in one line."""
    try:
        trainer.net.load_state_dict(ckpt["model"])
        trainer.load_extra_state(ckpt)
        rows, best, recorders = list(ckpt["rows"]), dict(ckpt["best"]), ckpt.get("recorders", {})
    except NOT_A_CHECKPOINT as e:
        raise not_a_checkpoint(path, e) from None
    if not isinstance(recorders, dict):
        raise RunDirError(
            f"cannot resume {path}: its checkpoint is from an older ctsp version (recorder "
            "states by position); start the run again"
        )
    return rows, best, dict(recorders)
