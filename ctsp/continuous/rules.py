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
            post = (phases.base_rates[:, dst], phases.nudged_rates[:, dst])
            bias = net.biases[e.dst] if e.owns_bias else None
            self.apply(
                net, e, proj.weight, bias, x, phases, post, (lr[e.name], phases.beta, batch, reduce)
            )

    def apply(self, net, e, weight: Tensor, bias, x: Tensor, phases, post, args) -> None:
        """Edge ``e``'s update (``post``: its postsynaptic base and nudged rates; ``args``:
        lr, beta, batch, reduce): Eq. 14 against the free presynaptic rates (x for the input
        projection)."""
        pre = x.flatten(1) if e.src < 0 else phases.free_rates[:, net.populations[e.src]]
        self.chl.apply(weight, bias, pre, *post, *args)


class SymmetricContrastiveHebbian(ContrastiveHebbian):
    """Equilibrium Propagation's rule (Scellier & Bengio 2017) for every trainable projection
    i -> j and the biases of the populations whose input projection owns them::

        dW = lr / (beta B) * (rho(s_j^beta).T @ rho(s_i^beta) - rho(s_j^0).T @ rho(s_i^0))

    (``phases.base_rates`` in place of rho(s^0) for symmetric nudging), the gradient of the
    Hopfield energy of a network with symmetric weights; biases and the input projection (its
    presynaptic x is the same in both phases) as Eq. 14. Computed as two one-sided products
    through the ``train.chl_backend`` implementation, the postsynaptic difference against the
    nudged presynaptic rates and the presynaptic difference against the base postsynaptic
    ones::

        rho_j^b.T rho_i^b - rho_j^0.T rho_i^0
            = (rho_j^b - rho_j^0).T rho_i^b + rho_j^0.T (rho_i^b - rho_i^0)
    """

    def apply(self, net, e, weight: Tensor, bias, x: Tensor, phases, post, args) -> None:
        if e.src < 0:  # x is the same in both phases: Eq. 14
            self.chl.apply(weight, bias, x.flatten(1), *post, *args)
            return
        src = net.populations[e.src]
        pre_base, pre_nudged = phases.base_rates[:, src], phases.nudged_rates[:, src]
        self.chl.apply(weight, bias, pre_nudged, *post, *args)
        self.chl.apply(weight.T, None, post[0], pre_base, pre_nudged, *args)


RULES: Registry = Registry(
    "continuous-time learning rule",
    {"chl": ContrastiveHebbian, "ep": SymmetricContrastiveHebbian},
)
