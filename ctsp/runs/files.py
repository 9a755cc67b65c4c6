"""The files of a run directory: one name per file, and the list ``--force`` clears."""

CONFIG = "config.toml"  # the resolved, rerunnable config
METRICS = "metrics.nc"  # one row per epoch (xarray Dataset, dims epoch[, layer])
CHECKPOINT = "checkpoint.pt"  # the last completed epoch: model, trainer and recorder states
BEST = "best.pt"  # the selected model: lowest validation error (no validation split: the last)
TRAJECTORIES = "trajectories.nc"  # recorded relaxations (record.trajectories)
ALIGNMENT = "alignment.nc"  # loop alignment angles (record.alignment_every)

RUN_FILES = (CONFIG, METRICS, CHECKPOINT, BEST, TRAJECTORIES, ALIGNMENT)
