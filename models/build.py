"""A discrete-family network from a run config: the one place that picks the family's builder."""

from __future__ import annotations

import torch

from ctsp.nn import uses_channels_last


def build_discrete_network(config, image_shape: tuple[int, int, int], classes: int):
    """The network of ``config.model`` and ``config.signal`` (a ``DiscreteRunConfig``), seeded
    by ``config.seed`` (``models.spiking`` for ``arch = "snn"``, else ``models.discrete``); the
    weights of a convolutional network channels-last (``ctsp.nn.precision``)."""
    torch.manual_seed(config.seed)
    if config.model.arch == "snn":
        from .spiking import build as build_snn

        net = build_snn(config, image_shape, classes)
    else:
        from .discrete import build

        net = build(config.model, config.signal, image_shape, classes)
    if uses_channels_last(net):
        net = net.to(memory_format=torch.channels_last)
    return net
