"""Learning that has gone wrong is said, not hidden: the checks :func:`ctsp.runs.fit` runs after
every epoch (``train.health``: "warn", "error" or "off").

Two signs that a run has stopped learning:

- its selection error (validation, else test) is at chance: at least 1 - 1.25 / C for C
  classes (0.875 for ten classes), where any trained network of the paper is far below;
- in a continuous-time network, at least 99 % of the hidden neurons' free-phase rates on the
  test set are saturated at 0 or 1 (``test_saturated``): the rate differences of Eq. 14 vanish
  there, so the weights stop moving.

Both are what too large a learning rate, nudging strength or step does (a huge finite value
trains at chance without a NaN ever appearing), and too small a learning rate keeps a run at
chance too.
"""

from __future__ import annotations

import warnings

from ..config import HEALTH
from ..errors import LearningError, LearningWarning

CHANCE_MARGIN = 1.25  # at chance: error >= 1 - CHANCE_MARGIN / classes
SATURATED = 0.99  # saturated: at least this fraction of the hidden neurons


def problems(row: dict, select: str, classes: int) -> list[str]:
    """What is wrong with the epoch's metrics ``row`` (empty when nothing is)."""
    found = []
    chance = 1 - 1 / classes
    if classes > 1 and row[select] >= 1 - CHANCE_MARGIN / classes:
        found.append(
            f"the {select.replace('_', ' ')} {row[select]:.1%} is at chance "
            f"({chance:.1%} for {classes} classes)"
        )
    if row.get("test_saturated", 0.0) >= SATURATED:
        found.append(
            f"{row['test_saturated']:.1%} of the hidden neurons are saturated at rate 0 or 1 "
            "(Eq. 14's rate differences vanish there)"
        )
    return found


def check(row: dict, select: str, classes: int, mode: str, keys: tuple[str, ...]) -> bool:
    """Warn (``LearningWarning``) or raise (``LearningError``) if ``row`` shows a run that does not
    learn; True if it did (so a run warns once). ``keys``: the settings that likely caused it."""
    found, how = problems(row, select, classes), HEALTH[mode]
    if not how.checks or not found:
        return False
    message = (
        f"epoch {row['epoch']}: {'; '.join(found)}: the run is not learning. Likely causes: "
        f"{', '.join(keys)} too large (or the learning rate too small). "
        + (
            'Set train.health = "warn" to go on regardless'
            if how.stops
            else 'train.health = "error" stops such a run, "off" silences this'
        )
    )
    if how.stops:
        raise LearningError(message)
    warnings.warn(message, LearningWarning, stacklevel=3)
    return True
