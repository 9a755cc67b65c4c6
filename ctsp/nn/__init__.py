"""The shared layer parts of every ctsp network (docs/architecture.md).

A sigprop layer is three separable parts: a *projection* (the synapses: :class:`Linear`,
:class:`Conv2d`; the same module carries the input and the target path; :class:`Transposed`,
tied feedback), a *neuron model*
(:class:`RateNeuron` with a rate function for the continuous model of Eq. 13,
:class:`StaticNeuron` for discrete networks, the spiking neurons of ``ctsp.spiking``), and a
*local learning rule* (``ctsp.continuous`` CHL, ``ctsp.discrete`` L_pred and the baselines).
This package holds the parts every family shares: projections, rate functions, the static
neuron, the comparisons O (Eq. 6/7), the composed discrete layer, the target generators
(Sec. III-D) and the mixed precision of discrete and spiking networks, each choice in its
registry.
"""

from .compare import COMPARISONS, comparison, o_dot, o_l2
from .layer import SignalLayer, max_pool, pooled_size
from .precision import (
    PRECISIONS,
    autocast,
    check_precision,
    grad_scaler,
    has_convolutions,
    memory_format,
    native_bfloat16_cpu,
    precision_warning,
    uses_channels_last,
)
from .projections import INITS, Conv2d, Linear, Transposed, glorot_uniform_
from .rates import RATE_FUNCTIONS, RateFunction, RateNeuron, rate_function
from .static import (
    ACTIVATIONS,
    BN_TARGETS,
    Shard,
    StaticNeuron,
    recalibrate_batch_norm,
    seed_dropout,
    sharded,
)
from .targets import (
    GENERATORS,
    TARGETS_INTO,
    TargetGenerator,
    TargetInput,
    TargetLoop,
    TargetLoopError,
    TargetOnly,
    make_generator,
)

__all__ = [
    "ACTIVATIONS",
    "BN_TARGETS",
    "COMPARISONS",
    "GENERATORS",
    "INITS",
    "PRECISIONS",
    "RATE_FUNCTIONS",
    "TARGETS_INTO",
    "Conv2d",
    "Linear",
    "RateFunction",
    "RateNeuron",
    "SignalLayer",
    "Shard",
    "StaticNeuron",
    "TargetGenerator",
    "TargetInput",
    "TargetLoop",
    "TargetLoopError",
    "TargetOnly",
    "Transposed",
    "autocast",
    "check_precision",
    "comparison",
    "glorot_uniform_",
    "grad_scaler",
    "has_convolutions",
    "uses_channels_last",
    "make_generator",
    "max_pool",
    "memory_format",
    "native_bfloat16_cpu",
    "o_dot",
    "o_l2",
    "pooled_size",
    "precision_warning",
    "rate_function",
    "recalibrate_batch_norm",
    "seed_dropout",
    "sharded",
]
