"""The continuous-time model of sigprop (paper Sec. V, Fig. 2c).

Rate populations follow Eq. 13 (:func:`eq13`, bound to one phase by :class:`Field`); a solver
from :data:`SOLVERS` relaxes them (:func:`relax`) through a free and a clamped phase; every
projection, the loop-back included, learns by the contrastive Hebbian rule of Eq. 14
(:func:`chl_update`, :class:`CHL`); :class:`Trainer` runs the phases and updates of a network
minibatch by minibatch (``ctsp.runs.fit`` drives it through the epochs).
"""

from .field import LOOP_MODES, Field, eq13, population_names
from .plasticity import BACKENDS, CHL, CHL_BACKENDS, chl_bias_update, chl_update
from .solvers import SOLVERS, Adaptive, FixedGrid, Relaxation, RelaxStats, relax, step_count
from .trainer import (
    BETA_SIGNS,
    RESUMABLE_KEYS,
    Phases,
    PhaseStats,
    Trainer,
    check_finite,
    check_sizes,
    mean_stats,
)

__all__ = [
    "BACKENDS",
    "BETA_SIGNS",
    "CHL",
    "CHL_BACKENDS",
    "LOOP_MODES",
    "RESUMABLE_KEYS",
    "SOLVERS",
    "Adaptive",
    "Field",
    "FixedGrid",
    "PhaseStats",
    "Phases",
    "RelaxStats",
    "Relaxation",
    "Trainer",
    "chl_bias_update",
    "chl_update",
    "check_finite",
    "check_sizes",
    "eq13",
    "mean_stats",
    "population_names",
    "relax",
    "step_count",
]
