"""Parallel training under every engine: backends, the transport between processes, the processes.

- :mod:`~ctsp.parallel.backends`: the :class:`Backend` implementations (one process, a layer
  pipeline, data-parallel replicas) that an engine's epoch loop drives through the narrow
  :class:`Stage` interface; :data:`BACKENDS`, :func:`build_backend`.
- :mod:`~ctsp.parallel.transport`: :class:`Transport` over torch.distributed (gloo, NCCL) or
  between the threads of one process (:func:`run_local`, for tests).
- :mod:`~ctsp.parallel.messages`: the typed messages and their encoding as tensors.
- :mod:`~ctsp.parallel.processes`: the :class:`World`, starting and watching worker processes,
  joining the group.

Below the engines (``ctsp.continuous``, ``ctsp.discrete``): it imports only ``ctsp.errors``,
``ctsp.environment`` and ``ctsp.registry``.
"""

from .backends import (
    BACKENDS,
    Backend,
    DataParallel,
    LayerPipeline,
    SingleProcess,
    Stage,
    backend_name,
    build_backend,
    split_layers,
)
from .messages import Batch, End, Epoch, Infer, Output, Report, State, Stop, decode, encode
from .processes import (
    Heartbeat,
    Workers,
    World,
    hang_timeout,
    launch,
    process_group,
    watch_parent,
)
from .transport import DistTransport, LocalTransport, LocalWorld, Transport, run_local

__all__ = [
    "BACKENDS",
    "Backend",
    "Batch",
    "DataParallel",
    "DistTransport",
    "End",
    "Epoch",
    "Heartbeat",
    "Infer",
    "LayerPipeline",
    "LocalTransport",
    "LocalWorld",
    "Output",
    "Report",
    "SingleProcess",
    "Stage",
    "State",
    "Stop",
    "Transport",
    "World",
    "Workers",
    "backend_name",
    "build_backend",
    "decode",
    "encode",
    "hang_timeout",
    "launch",
    "process_group",
    "run_local",
    "split_layers",
    "watch_parent",
]
