"""Loop alignment: the angle between each loop weight and the product of the others (paper Fig. 4).

In the sigprop loop network every weight matrix on the loop is both a forward and a feedback
weight: the learning signal that reaches projection k has travelled the rest of the loop. Sec. V-B
of the paper measures how well each weight matrix aligns with that path, and reports that all
angles fall below 90 degrees during training ("approximate symmetry").

Convention (column vectors, weights shaped (n_out, n_in) like ``torch.nn.Linear``): with the
loop's matrices W_0, …, W_{L-1} in loop order, W_k mapping population k to population k+1 and
W_{L-1} mapping back to population 0, the path from population k+1 around to population k is

    P_k = W_{k-1} ··· W_0 W_{L-1} ··· W_{k+1}          shaped (n_k, n_{k+1}), like W_k^T,

and the angle of W_k is the angle between W_k^T and P_k as flat vectors. In the paper's
row-vector notation (s2 <- rho(s1) W1, s3 <- rho(s2) W2, s1 <- rho(s3) W3) the paper's W_{k+1} is
our W_k^T, and the same angle reads "W_{k+2} ··· W_L W_1 ··· W_k ∠ W_{k+1}", e.g. "W3W1∠W2"
for the middle matrix of a three-matrix loop (:func:`paper_names`).

In EP's layered networks with feedback (``network.feedback``) the learning signal reaches
population k through the feedback projection fb_{k+1} in place of ff_{k+1}^T: the angle of fb_k
is the angle between fb_k and ff_k^T (:func:`feedback_angles`; 0 for symmetric feedback, which is
ff_k^T; for random feedback, how far the forward weights have come to align with it).

:class:`AlignmentRecorder` records the angles of a run (the loop's, then the feedback's) every
``record.alignment_every`` minibatches into ``alignment.nc`` in the run directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ctsp.continuous import FEEDBACK_MODES, LOOP_MODES
from ctsp.errors import ConfigError
from ctsp.runs import Recorder, files, save_netcdf

__all__ = [
    "ALIGNMENT_FILE",
    "AlignmentRecorder",
    "alignment_angles",
    "feedback_angles",
    "load_alignment",
    "loop_angles",
    "loop_weights",
    "paper_names",
]

ALIGNMENT_FILE = files.ALIGNMENT


def _as_float64(w) -> np.ndarray:
    if hasattr(w, "detach"):  # torch tensor
        w = w.detach().cpu().double().numpy()
    a = np.asarray(w, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"loop weights must be matrices, got an array of shape {a.shape}")
    return a


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Angle in degrees between two equally shaped arrays as flat vectors (nan if one is zero).

    Computed as 2 atan2(|u - v|, |u + v|) of the unit vectors u, v: accurate near 0 and 180
    degrees, where arccos of the cosine loses half the digits.
    """
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0 or not (np.isfinite(na) and np.isfinite(nb)):
        return float("nan")
    u, v = a / na, b / nb
    return float(np.degrees(2.0 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v))))


def _chain(mats: list[np.ndarray]) -> np.ndarray:
    return mats[0] if len(mats) == 1 else np.linalg.multi_dot(mats)


def loop_angles(weights: Sequence) -> np.ndarray:
    """Angles (degrees) between each loop weight W_k^T and the path P_k through the others.

    Args:
        weights: the loop's weight matrices in loop order, each shaped (n_out, n_in) (torch
            tensors or numpy arrays); ``weights[k]`` maps population k to population k+1 and the
            last one maps back to population 0. Any loop length L >= 2.

    Returns:
        float64 array of the L angles in the order of ``weights``: angle k is between W_k^T and
        P_k = W_{k-1} ··· W_0 W_{L-1} ··· W_{k+1} (both (n_k, n_{k+1})), as flat vectors, in
        [0, 180]; nan where a matrix or product is zero. Computed in float64.
    """
    ws = [_as_float64(w) for w in weights]
    n = len(ws)
    if n < 2:
        raise ValueError(f"a loop needs at least 2 weight matrices, got {n}")
    for k, w in enumerate(ws):
        nxt = ws[(k + 1) % n]
        if nxt.shape[1] != w.shape[0]:
            raise ValueError(
                f"loop weights do not chain: weights[{k}] is {w.shape} (n_out, n_in) but "
                f"weights[{(k + 1) % n}] is {nxt.shape}"
            )
    angles = np.empty(n)
    for k in range(n):
        # leftmost factor first: W_{k-1}, …, W_0, W_{L-1}, …, W_{k+1}
        path = [ws[(k - j) % n] for j in range(1, n)]
        angles[k] = _angle(ws[k].T, _chain(path))
    return angles


def paper_names(n: int) -> list[str]:
    """The paper's names of the ``n`` angles of :func:`loop_angles`, e.g. "W3W1∠W2".

    Paper indices are 1-based in loop order (W1 = ``weights[0]``) and products are written in
    row-vector order: angle k is "W_{k+2} ··· W_L W_1 ··· W_k ∠ W_{k+1}".
    """
    if n < 2:
        raise ValueError(f"a loop needs at least 2 weight matrices, got {n}")
    return ["".join(f"W{(k + j) % n + 1}" for j in range(1, n)) + f"∠W{k + 1}" for k in range(n)]


def loop_weights(net) -> tuple[list[str], list]:
    """Names and weights of a :class:`models.LayeredNetwork`'s loop, in loop order.

    The loop runs h1 -> h2 -> … -> out -> h1: [ff1, …, ff_{L-1}, loop]. The input projection is
    not on the loop. Raises ConfigError for a network without a loop-back (loop = "none").
    """
    if "loop" not in net.projections:
        raise ConfigError(
            "loop alignment needs a loop-back projection, but network.loop is 'none'; "
            "set network.loop to 'learned' or 'fixed', or record.alignment_every to 0"
        )
    names = [e.name for e in net.edges if e.name.startswith("ff")] + ["loop"]
    return names, [net.projections[name].weight for name in names]


def feedback_angles(net) -> tuple[list[str], np.ndarray]:
    """Names (fb1, …) and angles (degrees, float64) between each feedback weight fb_k
    (n_{k-1}, n_k) and the transpose of its forward weight ff_k; empty without feedback."""
    names = [e.name for e in net.edges if e.kind == "feedback"]
    weight = lambda name: _as_float64(net.projections[name].weight)  # noqa: E731
    angles = [_angle(weight(n), weight("ff" + n[2:]).T) for n in names]
    return names, np.array(angles, dtype=np.float64)


def alignment_angles(net) -> tuple[list[str], np.ndarray]:
    """The angles an :class:`AlignmentRecorder` records: the loop's (:func:`loop_angles`, where
    the network has a loop-back), then the feedback's (:func:`feedback_angles`)."""
    names, angles = [], []
    if "loop" in net.projections:
        loop_names, weights = loop_weights(net)
        names, angles = loop_names, list(loop_angles(weights))
    fb_names, fb_angles = feedback_angles(net)
    return names + fb_names, np.array([*angles, *fb_angles], dtype=np.float64)


def _recorded_names(config) -> tuple[list[str], list[str]]:
    """The names and labels of the angles recorded for ``config.network``: the loop's (paper
    names, "W2W3∠W1", …) and the feedback's ("fb1∠ff1ᵀ", …)."""
    n_pops = len(config.network.sizes) - 1
    names, labels = [], []
    if LOOP_MODES[config.network.loop].exists:
        names = [f"ff{k}" for k in range(1, n_pops)] + ["loop"]
        labels = paper_names(len(names))
    if FEEDBACK_MODES[config.network.feedback].exists:
        names += [f"fb{k}" for k in range(1, n_pops)]
        labels += [f"fb{k}∠ff{k}ᵀ" for k in range(1, n_pops)]
    return names, labels


class AlignmentRecorder(Recorder):
    """Records :func:`alignment_angles` of the network every ``record.alignment_every``
    minibatches.

    Writes ``alignment.nc`` (atomically, after every epoch): variable ``angle`` (degrees) with
    dims (step, weight); ``step`` counts the minibatches trained since the start of the run (the
    angle is taken after that minibatch's update); coordinates on ``step``: ``epoch`` (1-based
    epoch the step belongs to) and ``epoch_progress`` (epochs completed, fractional); on
    ``weight``: the projection names (ff1, …, loop, then fb1, …) and ``label``, the paper's
    names ("W2W3∠W1", …) and "fb1∠ff1ᵀ", …. ``state_dict`` / ``load_state_dict`` carry the
    record across a resume.
    """

    name = "alignment"

    def __init__(self, config) -> None:
        self.config = config
        self.every = int(config.record.alignment_every)
        if self.every < 1:
            raise ConfigError(
                f"invalid value for record.alignment_every: {self.every!r} (expected >= 1 "
                "for the alignment recorder)"
            )
        self.names, self.labels = _recorded_names(config)
        if not self.names:
            raise ConfigError(
                "record.alignment_every needs a loop-back or feedback projections, but "
                "network.loop is 'none' and network.feedback is 'none'; set one of them, or "
                "record.alignment_every to 0"
            )
        self._reset()

    def _reset(self) -> None:
        self.records: list[dict] = []  # {"step", "epoch", "batch", "angles"}
        self.seen = 0  # minibatches trained so far in this run
        self.batches_per_epoch: int | None = None
        self._epoch_batches = 0

    def after_batch(self, trainer, epoch: int, batch: int) -> None:
        self.seen += 1
        self._epoch_batches = batch + 1
        if self.seen % self.every == 0:
            names, angles = alignment_angles(trainer.net)
            if names != self.names:
                raise ConfigError(
                    f"the network's projections {names} are not the ones network.sizes, "
                    f"network.loop and network.feedback describe ({self.names})"
                )
            self.records.append(
                {"step": self.seen, "epoch": epoch + 1, "batch": batch + 1,
                 "angles": angles.tolist()}
            )  # fmt: skip

    def after_epoch(self, trainer, epoch: int, path: Path, last: bool) -> None:
        if self.batches_per_epoch is None and self._epoch_batches:
            self.batches_per_epoch = self._epoch_batches
        nb = self.batches_per_epoch
        if nb and self.seen != epoch * nb:
            # a resumed run whose checkpoint held no record: shift to the run's own step count
            shift = epoch * nb - self.seen
            self.seen += shift
            for r in self.records:
                r["step"] += shift
        save_netcdf(self.dataset(), Path(path) / ALIGNMENT_FILE)

    def dataset(self) -> xr.Dataset:
        """The record so far as an xarray Dataset (see the class docstring)."""
        nb = self.batches_per_epoch or max(self._epoch_batches, 1)
        steps = np.array([r["step"] for r in self.records], dtype=np.int64)
        epochs = np.array([r["epoch"] for r in self.records], dtype=np.int64)
        progress = np.array([(r["epoch"] - 1) + r["batch"] / nb for r in self.records])
        angles = np.array([r["angles"] for r in self.records], dtype=np.float64)
        angles = angles.reshape(len(self.records), len(self.names))
        ds = xr.Dataset(
            {"angle": (("step", "weight"), angles)},
            coords={
                "step": steps,
                "weight": np.array(self.names),
                "epoch": ("step", epochs),
                "epoch_progress": ("step", progress),
                "label": ("weight", np.array(self.labels)),
            },
        )
        ds["angle"].attrs.update(
            units="degree",
            long_name="angle between W_k^T and the product of the other loop weights, or "
            "between a feedback weight and its forward weight's transpose",
        )
        ds["step"].attrs["long_name"] = "minibatches trained (angle taken after the update)"
        ds["epoch_progress"].attrs["long_name"] = "epochs completed"
        ds.attrs.update(
            title=f"loop alignment: {self.config.name}",
            loop=self.config.network.loop,
            feedback=self.config.network.feedback,
            alignment_every=self.every,
            batches_per_epoch=int(nb),
            convention=(
                "loop: angle k between W_k^T and P_k = W_{k-1}...W_0 W_{L-1}...W_{k+1} as flat "
                "vectors, W_k (n_out, n_in) mapping population k to k+1 along h1 -> ... -> out "
                "-> h1; feedback: the angle between fb_k and ff_k^T"
            ),
            config=json.dumps(self.config.to_dict()),
        )
        return ds

    def state_dict(self) -> dict:
        return {
            "records": [dict(r) for r in self.records],
            "seen": self.seen,
            "batches_per_epoch": self.batches_per_epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        self._reset()
        self.records = [dict(r) for r in state["records"]]
        self.seen = int(state["seen"])
        self.batches_per_epoch = state["batches_per_epoch"]


def load_alignment(run: str | Path) -> xr.Dataset:
    """Read ``alignment.nc`` of a run directory (or the file itself) into memory."""
    path = Path(run)
    if path.is_dir():
        path = path / ALIGNMENT_FILE
    with xr.open_dataset(path, engine="scipy") as ds:
        return ds.load()
