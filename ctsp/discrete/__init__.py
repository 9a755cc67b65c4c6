"""Discrete sigprop and its baselines (paper Sec. III-IV; Tables I, II, VI).

Learners (:class:`Learner`, by ``train.rule`` in :data:`RULES`): :class:`Sigprop` (every layer's
own L_pred, :class:`LPred`, Eq. 9, stepped as soon as its output and target arrive) and the
baselines BP, FA, DFA, LL-BP, LL-FA and Shallow. :class:`DiscreteTrainer` runs a learner's
epochs on a training backend (:data:`ctsp.parallel.BACKENDS`).
"""

from .baselines import Backprop, DirectFeedbackAlignment, FeedbackAlignment, Shallow
from .feedback import FeedbackAlignmentFunction, feedback_alignment, fixed_generator
from .learner import Learner, Rules
from .local import LocalLearning, LocalLearningFA, PredSim, PredSimHead, similarity
from .lpred import ClassifierCE, LPred
from .rules import RULES
from .sigprop import PREDICTIONS, Sigprop
from .trainer import RESUMABLE_KEYS, DiscreteTrainer, augment, learning_rate

__all__ = [
    "PREDICTIONS",
    "RESUMABLE_KEYS",
    "RULES",
    "Backprop",
    "ClassifierCE",
    "DirectFeedbackAlignment",
    "DiscreteTrainer",
    "FeedbackAlignment",
    "FeedbackAlignmentFunction",
    "LPred",
    "Learner",
    "LocalLearning",
    "LocalLearningFA",
    "PredSim",
    "PredSimHead",
    "Rules",
    "Shallow",
    "Sigprop",
    "augment",
    "feedback_alignment",
    "fixed_generator",
    "learning_rate",
    "similarity",
]
