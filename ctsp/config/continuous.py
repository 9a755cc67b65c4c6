"""``RunConfig``: the continuous-time networks of ``ctsp simulate`` (ctsp/configs/*.toml).

Five sections and three top-level keys::

    name, seed, device, threads
    [data]     name, dir, validation
    [network]  sizes, loop, feedback, init_gain, rate, tau
    [solver]   method, step, free_duration, clamped_duration, tol, check_every, rtol, atol,
               max_sweeps
    [train]    epochs, schedule_epochs, batch_size, rule, beta, beta_sign, symmetric, lr, loop_lr,
               persistent, chl_backend, decay, decay_at, schedule, t_max, eval_batch_size, health
    [record]   trajectories, trajectory_epochs, populations, stride, alignment_every

Every key is documented on its field (``ctsp simulate --help-config`` prints them all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..continuous import (
    BETA_SIGNS,
    CHL_BACKENDS,
    FEEDBACK_MODES,
    LOOP_MODES,
    RULES,
    SOLVERS,
    ode_methods,
    step_count,
)
from ..data import DATASET_NAMES
from ..errors import ConfigError
from ..nn import RATE_FUNCTIONS
from .base import (
    TENSORBOARD_HELP,
    THREADS_HELP,
    ConfigBase,
    ParallelConfig,
    Section,
    _check_top_level,
    _require,
    option,
    section,
)
from .schedule import HEALTH, SCHEDULES, LRSchedule

DECAY_AT = (0.5, 0.75, 0.89, 0.94)  # the paper's milestones (fractions of the epochs)


@dataclass(frozen=True)
class DataConfig(Section):
    PREFIX: ClassVar[str] = "data."

    name: str = option("digits", "dataset name (see `ctsp data list`)", DATASET_NAMES)
    dir: str = option("", 'data directory; "" = $CTSP_DATA, ~/.cache/ctsp, /usr/share/datasets')
    validation: float = option(
        0.0,
        "training examples held out for validation (seeded by seed): a whole count, or below 1 "
        "a fraction of the training set (1/12: 5,000 of 60,000 images)",
    )

    def check(self) -> None:
        v = self.validation
        _require(v >= 0 and (v < 1 or v == int(v)), "data.validation", v,
                 "a whole count >= 0, or a fraction below 1")  # fmt: skip


@dataclass(frozen=True)
class NetworkConfig(Section):
    PREFIX: ClassVar[str] = "network."

    sizes: tuple[int, ...] = option((64, 256, 10), "[input, hidden..., output] population sizes")
    loop: str = option("learned", "loop-back output -> first hidden population", LOOP_MODES)
    feedback: str = option(
        "none",
        "feedback projection h_k -> h_{k-1} per feed-forward one: the transpose of its weights "
        "(symmetric, EP) or fixed random weights; none: sigprop",
        FEEDBACK_MODES,
    )
    init_gain: float = option(
        1.0,
        "factor on the initial Glorot weights between populations (forward, loop-back, "
        "feedback); 0.5 keeps EP's symmetric layers out of saturation",
    )
    rate: str = option("hard_sigmoid", "rate function rho of Eq. 13", RATE_FUNCTIONS)
    tau: float = option(1.0, "neuron time constant r_j (the time unit of the simulation)")

    def check(self) -> None:
        _require(
            len(self.sizes) >= 3 and min(self.sizes) >= 1,
            "network.sizes",
            list(self.sizes),
            "[input, hidden..., output], at least 3 positive sizes",
        )
        _require(self.tau > 0, "network.tau", self.tau, "> 0")
        _require(self.init_gain > 0, "network.init_gain", self.init_gain, "> 0")


@dataclass(frozen=True)
class SolverConfig(Section):
    PREFIX: ClassVar[str] = "solver."

    method: str = option(
        "euler",
        'solver of the relaxation phases: an ODE method, or "steady" (the fixed points by layer '
        "sweeps; step and the durations then serve recorded trajectories only, check_every, "
        "rtol and atol nothing)",
        SOLVERS,
    )
    step: float = option(0.5, "step size eps (fixed-grid) / first step (adaptive), time units")
    free_duration: float = option(10.0, "free phase length (the cap when tol > 0), time units")
    clamped_duration: float = option(2.0, "clamped phase length (the cap when tol > 0)")
    tol: float = option(
        0.0, "steady-state stop: max |ds/dt| per sample below tol; 0 = off (steady: max_sweeps)"
    )
    check_every: int = option(5, "steps between steady-state checks (tol > 0)")
    rtol: float = option(1e-5, "relative tolerance of adaptive methods")
    atol: float = option(1e-6, "absolute tolerance of adaptive methods")
    max_sweeps: int = option(
        3, 'method "steady": layer sweeps per phase (tol = 0), or their cap (tol > 0)'
    )
    max_steps: int = option(
        100_000,
        "the most steps a phase may take (duration / step); a config that asks for more is "
        "refused before the run starts",
    )

    def check(self) -> None:
        _require(self.step > 0, "solver.step", self.step, "> 0")
        _require(self.free_duration > 0, "solver.free_duration", self.free_duration, "> 0")
        _require(self.clamped_duration > 0, "solver.clamped_duration", self.clamped_duration, "> 0")
        _require(self.tol >= 0, "solver.tol", self.tol, ">= 0")
        _require(self.check_every >= 1, "solver.check_every", self.check_every, ">= 1")
        _require(self.rtol > 0 and self.atol > 0, "solver.rtol/atol", (self.rtol, self.atol), "> 0")
        _require(self.max_sweeps >= 1, "solver.max_sweeps", self.max_sweeps, ">= 1")
        _require(self.max_steps >= 1, "solver.max_steps", self.max_steps, ">= 1")
        for phase in ("free", "clamped"):
            duration = getattr(self, f"{phase}_duration")
            steps = step_count(duration, self.step)
            if steps > self.max_steps:
                raise ConfigError(
                    f"solver.{phase}_duration / solver.step = {duration:g} / {self.step:g} is "
                    f"{steps} steps per phase, more than solver.max_steps = {self.max_steps} "
                    "(a shorter phase, a larger step, or a larger solver.max_steps)"
                )


@dataclass(frozen=True)
class TrainConfig(Section, LRSchedule):
    PREFIX: ClassVar[str] = "train."

    epochs: int = option(30, "training epochs")
    schedule_epochs: int = option(
        0,
        "epochs the learning-rate schedule is planned over (0 = train.epochs); --resume with "
        "more epochs keeps the plan the run started with, the new epochs at its last rate",
    )
    batch_size: int = option(20, "minibatch size")
    rule: str = option(
        "chl", "learning rule of the projections (chl: Eq. 14; ep: EP's symmetric rule)", RULES
    )
    beta: float = option(0.5, "nudging strength of the clamped phase (> 0)")
    beta_sign: str = option("random", "sign of beta per minibatch", BETA_SIGNS)
    symmetric: bool = option(False, "nudge with +beta and -beta, update from their difference")
    lr: tuple[float, ...] = option(
        (0.1, 0.05), "CHL learning rate per feed-forward projection, input side first"
    )
    loop_lr: float = option(0.05, 'CHL learning rate of the loop-back (loop = "learned")')
    persistent: bool = option(False, "start each example's free phase from its last fixed point")
    chl_backend: str = option("auto", "implementation of the CHL update (Eq. 14)", CHL_BACKENDS)
    decay: float = option(1.0, "step decay factor of all learning rates (1 = constant rates)")
    decay_at: tuple[float, ...] = option(
        DECAY_AT, "fractions of the planned epochs where decay applies"
    )
    schedule: str = option("step", "learning-rate schedule", SCHEDULES)
    t_max: int = option(0, "cosine: annealing period in epochs (0 = the planned epochs)")
    eval_batch_size: int = option(1000, "minibatch size of evaluation")
    health: str = option(
        "warn", "a run at chance or saturated after an epoch (ctsp.runs.health)", HEALTH
    )

    def check(self) -> None:
        self.check_schedule()
        _require(self.epochs >= 1, "train.epochs", self.epochs, ">= 1")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, ">= 1")
        _require(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, ">= 1")
        _require(self.beta > 0, "train.beta", self.beta, "> 0")
        _require(all(v >= 0 for v in self.lr), "train.lr", list(self.lr), "all >= 0")
        _require(self.loop_lr >= 0, "train.loop_lr", self.loop_lr, ">= 0")


@dataclass(frozen=True)
class RecordConfig(Section):
    PREFIX: ClassVar[str] = "record."

    trajectories: int = option(0, "test samples whose relaxations are recorded (0 = none)")
    trajectory_epochs: int = option(0, "also record every K epochs (0 = only at the end)")
    populations: tuple[str, ...] = option(("all",), "populations to record (h1, h2, …, out) or all")
    stride: int = option(1, "keep every stride-th solver step of a recorded relaxation")
    alignment_every: int = option(0, "loop alignment angles every N minibatches (0 = off)")
    tensorboard: bool = option(False, TENSORBOARD_HELP)

    def check(self) -> None:
        _require(self.trajectories >= 0, "record.trajectories", self.trajectories, ">= 0")
        _require(
            self.trajectory_epochs >= 0, "record.trajectory_epochs", self.trajectory_epochs, ">= 0"
        )
        _require(self.stride >= 1, "record.stride", self.stride, ">= 1")
        _require(self.alignment_every >= 0, "record.alignment_every", self.alignment_every, ">= 0")


@dataclass(frozen=True)
class RunConfig(ConfigBase):
    """``ctsp simulate``: the continuous-time layered networks (sigprop's loop network, EP's)."""

    SECTIONS: ClassVar[tuple[str, ...]] = (
        "data",
        "network",
        "solver",
        "train",
        "parallel",
        "record",
    )
    BUNDLED: ClassVar[str] = ""
    COMMAND: ClassVar[str] = "simulate"

    name: str = option("digits-loop", "run name (default run directory runs/<UTC time>-<name>)")
    seed: int = option(0, "random seed of weights, shuffling and beta signs")
    device: str = option("cpu", '"cpu", "cuda" or "cuda:N"')
    threads: int = option(0, THREADS_HELP)
    data: DataConfig = section(DataConfig, "the dataset")
    network: NetworkConfig = section(NetworkConfig, "the network (loop-back, feedback)")
    solver: SolverConfig = section(SolverConfig, "the relaxation phases")
    train: TrainConfig = section(TrainConfig, "training")
    parallel: ParallelConfig = section(ParallelConfig, "training over several processes")
    record: RecordConfig = section(RecordConfig, "recordings")

    def _check_parallel(self) -> None:
        p = self.parallel
        if p.stages > 1:
            raise ConfigError(
                f"parallel.stages = {p.stages}: the continuous-time network relaxes its "
                "populations together (the loop-back couples them), so it has no layer "
                "pipeline; use parallel.replicas"
            )
        if p.replicas > 1 and self.train.persistent:
            raise ConfigError(
                f"parallel.replicas = {p.replicas} with train.persistent: each replica would keep "
                "only its shard's persistent states; use one process"
            )

    def network_summary(self) -> str:
        """The network in a few words (``ctsp configs``), e.g. "784-1500-1500-10, loop learned"."""
        n = self.network
        feedback = "" if n.feedback == "none" else f", {n.feedback} feedback"
        return f"{'-'.join(map(str, n.sizes))}, loop {n.loop}{feedback}"

    def check(self) -> None:
        _check_top_level(self.name, self.seed, self.device, self.threads)
        if (
            self.solver.method == "steady"
            and not RATE_FUNCTIONS[self.network.rate].identity_within_bounds
        ):
            ode = ", ".join(ode_methods())
            raise ConfigError(
                f'solver.method "steady" needs a rate function that is the identity within its '
                f"bounds (hard_sigmoid): network.rate {self.network.rate!r} has no closed-form "
                f"population update; use an ODE method ({ode})"
            )
        t = self.train
        negative = BETA_SIGNS[t.beta_sign].negative or t.symmetric
        if self.solver.method == "steady" and negative and t.beta * self.network.tau >= 1:
            raise ConfigError(
                f'solver.method "steady" with train.beta = {t.beta:g} and negative nudges '
                f"({'train.symmetric' if t.symmetric else 'train.beta_sign = random'}) gives "
                f"1 + r beta <= 0 for r = network.tau = {self.network.tau:g}: the nudged output "
                f'has no steady state; use train.beta_sign = "positive" without symmetric '
                f"nudging, train.beta < 1/r, or an ODE method"
            )
        self._check_parallel()
        n_ff = len(self.network.sizes) - 1
        _require(
            len(self.train.lr) == n_ff,
            "train.lr",
            list(self.train.lr),
            f"one learning rate per feed-forward projection ({n_ff} for sizes "
            f"{list(self.network.sizes)})",
        )
