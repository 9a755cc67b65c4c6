"""The continuous-time model of sigprop (paper Sec. V, Fig. 2c).

Rate populations follow Eq. 13 (:func:`eq13`, bound to one phase by :class:`Field`); a solver
from :data:`SOLVERS` relaxes them (:func:`relax`) through a free and a clamped phase (an ODE
method, or "steady": the phase's fixed point by layer sweeps, :class:`Steady`); every
projection, the loop-back included, learns by the contrastive Hebbian rule of Eq. 14
(:func:`chl_update`, :class:`CHL`); :class:`Trainer` runs the phases and updates of a network
minibatch by minibatch (``ctsp.runs.fit`` drives it through the epochs).
"""

from .field import (
    LOOP_MODES,
    Field,
    block_residual,
    block_state,
    block_terms,
    current,
    eq13,
    population_names,
    recurrent_edges,
)
from .plasticity import BACKENDS, CHL, CHL_BACKENDS, chl_bias_update, chl_update
from .solvers import (
    SOLVERS,
    Adaptive,
    FixedGrid,
    Relaxation,
    RelaxStats,
    Steady,
    ode_methods,
    relax,
    step_count,
)
from .trainer import (
    BETA_SIGNS,
    RESUMABLE_KEYS,
    Phases,
    PhaseStats,
    Trainer,
    check_finite,
    check_sizes,
    mean_stats,
    resumable_keys,
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
    "Steady",
    "Trainer",
    "chl_bias_update",
    "chl_update",
    "check_finite",
    "block_residual",
    "block_state",
    "block_terms",
    "check_sizes",
    "current",
    "eq13",
    "mean_stats",
    "ode_methods",
    "population_names",
    "recurrent_edges",
    "relax",
    "resumable_keys",
    "step_count",
]
