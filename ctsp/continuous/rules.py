"""Learning rules of the continuous-time networks, by name (``train.rule``; :data:`RULES`).

A rule is a class built from the run config; after every minibatch's phases the trainer calls
``rule.update(net, x, phases, lr, batch, reduce)``, with the network, the minibatch's input x
(B, n_in), the phases' rates (``trainer.Phases``), each projection's learning rate of this
epoch (the schedule applied; ``lr[edge.name]``), the minibatch's size ``batch`` and ``reduce``:
None in one process; in a data-parallel replica (``parallel.replicas``; x is then its shard of
the minibatch) the sum of a tensor over the replicas, which the rule applies to its sums over
the samples before it changes a weight. It changes the network's weights and biases in place. A
new rule is one class and one ``RULES.register(name, cls)``; the config, ``--help-config`` and
the error messages list it.
"""

from __future__ import annotations

from torch import Tensor

from ..registry import Registry
from .plasticity import CHL


class ContrastiveHebbian:
    """Eq. 14 for every trainable projection i -> j, the loop-back included, and the biases of
    the populations whose input projection owns them::

        dW = lr / (beta B) * (rho(s_j^beta) - rho(s_j^0)).T @ rho(s_i^0)

    (``phases.base_rates`` in place of rho(s^0) for symmetric nudging, with the effective
    ``phases.beta``); the presynaptic rates of the input projection are the input x. The
    products go through the ``train.chl_backend`` implementation (:class:`CHL`).
    """

    def __init__(self, config) -> None:
        self.chl = CHL(config.train.chl_backend)

    def update(self, net, x: Tensor, phases, lr: dict[str, float], batch: int, reduce) -> None:
        for e in net.edges:
            proj = net.projections[e.name]
            if not proj.trainable or lr[e.name] == 0:
                continue
            dst = net.populations[e.dst]
            pre = x.flatten(1) if e.src < 0 else phases.free_rates[:, net.populations[e.src]]
            self.chl.apply(
                proj.weight,
                net.biases[e.dst] if e.owns_bias else None,
                pre,
                phases.base_rates[:, dst],
                phases.nudged_rates[:, dst],
                lr[e.name],
                phases.beta,
                batch,
                reduce,
            )


RULES: Registry = Registry("continuous-time learning rule", {"chl": ContrastiveHebbian})
