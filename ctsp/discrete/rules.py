"""The learning rules of discrete networks (``train.rule``), name -> learner class.

A learner class takes ``(network, config)`` and implements :class:`ctsp.discrete.Learner`. A new
rule is one module with its class and one line here (docs/architecture.md shows an example).
"""

from __future__ import annotations

from ..registry import Registry
from .baselines import Backprop, DirectFeedbackAlignment, FeedbackAlignment, Shallow
from .local import LocalLearning, LocalLearningFA
from .sigprop import Sigprop

RULES = Registry(
    "learning rule",
    {
        "sigprop": Sigprop,
        "bp": Backprop,
        "fa": FeedbackAlignment,
        "dfa": DirectFeedbackAlignment,
        "ll-bp": LocalLearning,
        "ll-fa": LocalLearningFA,
        "shallow": Shallow,
    },
)
