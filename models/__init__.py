"""Networks assembled from ctsp's layers."""

from .build import build_discrete_network
from .discrete import DiscreteNetwork
from .discrete import build as build_discrete
from .loop import LOOP_MODES, Edge, LoopNetwork

__all__ = [
    "LOOP_MODES",
    "DiscreteNetwork",
    "Edge",
    "LoopNetwork",
    "build_discrete",
    "build_discrete_network",
]
