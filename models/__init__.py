"""Networks assembled from ctsp's layers."""

from .build import build_discrete_network
from .discrete import DiscreteNetwork
from .discrete import build as build_discrete
from .layered import FEEDBACK_MODES, LOOP_MODES, Edge, LayeredNetwork

__all__ = [
    "FEEDBACK_MODES",
    "LOOP_MODES",
    "DiscreteNetwork",
    "Edge",
    "LayeredNetwork",
    "build_discrete",
    "build_discrete_network",
]
