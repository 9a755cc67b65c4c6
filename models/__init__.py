"""Networks assembled from ctsp's layers."""

from .loop import LOOP_MODES, Edge, LoopNetwork

__all__ = ["LOOP_MODES", "Edge", "LoopNetwork"]
