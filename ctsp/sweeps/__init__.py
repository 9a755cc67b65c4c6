"""Studies: sweeps of a config's keys over seeds on Ray Tune, read back as one Dataset.

- :func:`load_spec`, :class:`SweepSpec`, :class:`Trial` (``spec``): the sweep's spec and the
  trials it stands for;
- :func:`sweep` (``runner``): run or continue a sweep in a directory, every trial an ordinary
  ctsp run directory under ``DIR/trials``; :func:`trials`, :func:`status`;
- ``SEARCHERS``, ``SCHEDULERS`` (``search``): a ``[search]``'s algorithm and scheduler, Ray
  Tune's own, minimising :data:`METRIC`;
- :func:`open_sweep`, :func:`summary`, :func:`plot` (``results``): the trials as one xarray
  Dataset with the swept keys and the seed as dimensions, and the test error at the
  validation-selected epoch, mean ± sd over seeds.

Ray is an optional extra (``pip install -e '.[sweep]'``); only :func:`sweep` needs it.
"""

from .results import open_sweep, plot, settings, summary
from .runner import SPEC_FILE, failures, status, stops, sweep, trials
from .search import METRIC, SCHEDULERS, SEARCHERS
from .spec import DISTRIBUTIONS, SweepSpec, Trial, bundled_specs, load_spec

__all__ = [
    "DISTRIBUTIONS",
    "METRIC",
    "SCHEDULERS",
    "SEARCHERS",
    "SPEC_FILE",
    "SweepSpec",
    "Trial",
    "bundled_specs",
    "failures",
    "load_spec",
    "open_sweep",
    "plot",
    "settings",
    "status",
    "stops",
    "summary",
    "sweep",
    "trials",
]
