"""The continuous-time model of sigprop (paper Sec. V, Fig. 2c).

Rate populations follow Eq. 13 (:func:`eq13`, bound to one phase by :class:`Field`); a solver
from :data:`SOLVERS` relaxes them (:func:`relax`, as a :class:`RelaxSpec` says) through a free
and a clamped phase (an ODE method, or "steady": the phase's fixed point by layer sweeps,
:class:`Steady`), a :class:`Relaxation` with its :class:`RelaxStats` and :class:`Status` each
(:func:`relaxation_dataset`: a recorded one as xarray); every
projection, the loop-back included, learns by the rule of ``train.rule`` (:data:`RULES`; the
contrastive Hebbian rule of Eq. 14 by default, :class:`ContrastiveHebbian` through
:func:`chl_update`, :class:`CHL`); :class:`Trainer` runs the phases and updates of a network
minibatch by minibatch (``ctsp.runs.fit`` drives it through the epochs).
"""

from .export import relaxation_dataset
from .field import (
    FEEDBACK_MODES,
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
from .rules import RULES, ContrastiveHebbian
from .solvers import (
    SOLVERS,
    Adaptive,
    Counted,
    FixedGrid,
    Relaxation,
    RelaxSpec,
    RelaxStats,
    Status,
    Steady,
    TimeStepping,
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
    check_relaxed,
    check_sizes,
    mean_stats,
    resumable_keys,
)

__all__ = [
    "BACKENDS",
    "BETA_SIGNS",
    "CHL",
    "CHL_BACKENDS",
    "FEEDBACK_MODES",
    "LOOP_MODES",
    "RESUMABLE_KEYS",
    "RULES",
    "SOLVERS",
    "Adaptive",
    "ContrastiveHebbian",
    "Counted",
    "Field",
    "FixedGrid",
    "PhaseStats",
    "Phases",
    "RelaxSpec",
    "RelaxStats",
    "Relaxation",
    "Status",
    "Steady",
    "TimeStepping",
    "Trainer",
    "chl_bias_update",
    "chl_update",
    "check_finite",
    "check_relaxed",
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
    "relaxation_dataset",
    "resumable_keys",
    "step_count",
]
