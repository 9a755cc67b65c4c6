from .alignment import AlignmentRecorder, load_alignment, loop_angles, loop_weights, paper_names
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
    "convergence_time",
    "open_trajectories",
    "phase_end",
    "plot_epochs",
    "plot_population",
    "plot_residual",
    "population_summary",
    "settling_time",
]
