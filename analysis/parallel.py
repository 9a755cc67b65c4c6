"""A performance model of parallel sigprop training: the seconds per epoch (and samples per
second) of a layer pipeline of S stages or of R data-parallel replicas, from measured or
assumed per-layer times and message costs (issue 18; docs/performance.md).

Messages cost ``Link.send(n) = latency + n / bandwidth`` (n bytes); an all-reduce over R
processes, as a ring, ``2 (R - 1) latency + 2 (R - 1) / R n / bandwidth``.

Layer pipeline (``ctsp.parallel.LayerPipeline``): stage s spends, per minibatch, its layers'
time c_s = sum_{l in s} t_l(B) (batch B), receives the carry from stage s - 1, sends its own
to stage s + 1 and reports to rank 0 (one small message). One minibatch leaves the pipeline
every max_s T_s (the costliest stage sets the pace), and an epoch of K minibatches takes
(K + S - 1) max_s T_s (the pipeline fills and drains), plus the state exchange at the start
and end of the epoch: 2 (S - 1) sends of the network and learner state.

Data-parallel replicas (``ctsp.parallel.DataParallel``): every replica runs all layers on its
shard, t_l(B / R), then per optimizer step an all-reduce of that step's gradients; per
batch-norm layer four small all-reduces (the statistics forward, their gradients backward);
per minibatch one all-reduce of the losses and errors. Nothing overlaps in the model (ctsp
overlaps nothing within a replica either), so the epoch is K times the sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """A connection between two processes: ``latency`` (s per message) and ``bandwidth``
    (bytes per s)."""

    latency: float
    bandwidth: float

    def send(self, nbytes: float) -> float:
        """Seconds to send ``nbytes`` from one process to another."""
        return self.latency + nbytes / self.bandwidth

    def all_reduce(self, nbytes: float, ranks: int) -> float:
        """Seconds of a ring all-reduce of ``nbytes`` over ``ranks`` processes (0 for one)."""
        if ranks <= 1:
            return 0.0
        steps = 2 * (ranks - 1)
        return steps * self.latency + steps / ranks * nbytes / self.bandwidth


def stage_seconds(
    layer_seconds: Sequence[float],
    carry_bytes: Sequence[float],
    splits: Sequence[tuple[int, int]],
    link: Link,
) -> list[float]:
    """Seconds per minibatch of every stage: its layers' time, the carry received from the
    stage before and sent to the next (``carry_bytes[l]``: what layer l passes on), and its
    report to rank 0 (stages > 0)."""
    out = []
    for s, (start, stop) in enumerate(splits):
        t = sum(layer_seconds[start:stop])
        if s > 0:
            t += link.send(carry_bytes[start - 1]) + link.latency
        if s < len(splits) - 1:
            t += link.send(carry_bytes[stop - 1])
        out.append(t)
    return out


def pipeline_seconds(
    layer_seconds: Sequence[float],
    carry_bytes: Sequence[float],
    splits: Sequence[tuple[int, int]],
    link: Link,
    batches: int,
    state_bytes: float = 0.0,
) -> float:
    """Seconds of an epoch of ``batches`` minibatches through the pipeline ``splits``."""
    stages = stage_seconds(layer_seconds, carry_bytes, splits, link)
    exchange = 2 * (len(splits) - 1) * link.send(state_bytes) if len(splits) > 1 else 0.0
    return (batches + len(splits) - 1) * max(stages) + exchange


def replica_seconds(
    shard_seconds: float,
    step_bytes: Sequence[float],
    norms: int,
    link: Link,
    replicas: int,
    batches: int,
) -> float:
    """Seconds of an epoch of ``batches`` minibatches over ``replicas`` replicas:
    ``shard_seconds`` per minibatch for all layers on one shard, one gradient all-reduce per
    optimizer step (``step_bytes``), four small all-reduces per batch-norm layer (``norms``)
    and one for the losses."""
    comm = sum(link.all_reduce(n, replicas) for n in step_bytes)
    comm += (4 * norms + 1) * link.all_reduce(0.0, replicas)
    return batches * (shard_seconds + comm)
