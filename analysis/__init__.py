"""Computations on networks and runs: loop alignment (Fig. 4), trajectories (recording and
analysis), the efficiency of training steps, a performance model of parallel training. Imports
only from ``ctsp`` (and ``models``)."""

from .alignment import AlignmentRecorder, load_alignment, loop_angles, loop_weights, paper_names
from .efficiency import COUNTED, Sections
from .efficiency import markdown as efficiency_markdown
from .efficiency import measure as measure_efficiency
from .parallel import Link, pipeline_seconds, replica_seconds, stage_seconds
from .recording import TrajectoryRecorder
from .trajectories import (
    convergence_time,
    open_trajectories,
    phase_end,
    plot_epochs,
    plot_population,
    plot_residual,
    population_summary,
    settling_time,
)

__all__ = [
    "AlignmentRecorder",
    "load_alignment",
    "loop_angles",
    "loop_weights",
    "paper_names",
    "COUNTED",
    "Sections",
    "efficiency_markdown",
    "measure_efficiency",
    "convergence_time",
    "open_trajectories",
    "phase_end",
    "plot_epochs",
    "plot_population",
    "plot_residual",
    "population_summary",
    "settling_time",
    "TrajectoryRecorder",
    "Link",
    "pipeline_seconds",
    "replica_seconds",
    "stage_seconds",
]
