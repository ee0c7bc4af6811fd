"""The shared vocabulary of a ticket search: jobs, results, levels, states, and the callback protocol.

A search is a generator of events: a `RoundJob` asks its driver to train one
round (the driver sends back the `TrainResult`), a `Level` announces a
ticket's masks for round r (what controls branch on), and a `RoundResult` is
a finished round. What watches a search (progress bars, a study's trial,
a ticket saver) is a `Callback`: a base class of named no-op hooks, as
Lightning's, of which a watcher overrides the ones it needs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import strict_json

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import Schedule, TrainConfig

Masks = dict[str, "torch.Tensor"]
State = dict[str, "torch.Tensor"]


@dataclass
class RoundJob:
    """One round's training, as a trainer needs it: the model holds the start state and is trained in place."""

    round: int
    model: nn.Module
    masks: Masks
    train: TrainConfig
    sched: Schedule
    data_seed: int  # data order and augmentations
    dropout_seed: int | None
    start: int  # first schedule iteration
    end: int  # schedule iteration to stop at
    capture_at: int | None = None  # snapshot the state after this many iterations (θ_k)
    constant_lr: float | None = None  # fine-tuning: this rate instead of the schedule
    label: str = ""  # for progress displays: "round 3", "ticket round 2"
    evaluate: bool = True  # False: only replay iterations (rebuilding θ_k): no validation, no test reads


@dataclass
class Evaluation:
    loss: float
    accuracy: float


@dataclass
class TrainResult:
    """What one round's training measured: losses and accuracies at its early-stop iteration and at its end."""

    start: int  # first iteration of this run in the schedule
    end: int  # iteration training stopped at: the schedule's end, or earlier with patience
    train_loss: float = math.nan  # mean training loss over the last evaluation window
    val_loss: float = math.nan  # at the early-stop iteration (minimum validation loss)
    val_accuracy: float = math.nan  # at the early-stop iteration
    early_stop_iteration: int = 0  # iteration of minimum validation loss
    test_accuracy: float = math.nan  # at the end of training (reported, never selected on)
    test_accuracy_at_early_stop: float = math.nan  # at the early-stop iteration (reported, never selected on)
    wall_seconds: float = 0.0
    start_test_accuracy: float = math.nan  # the state training started from, before any step
    snapshot: State | None = None  # model state at `capture_at`
    stopped_early: bool = False  # patience ended the run before the schedule's end

    @property
    def iterations(self) -> int:
        return self.end - self.start


@dataclass
class RoundResult:
    round: int
    density: float  # fraction of prunable weights remaining, from the masks
    weights_remaining: int
    val_loss: float  # at the early-stop iteration (minimum validation loss)
    val_accuracy: float
    early_stop_iteration: int
    test_accuracy: float  # at the end of training; reported, never selected on
    test_accuracy_at_early_stop: float  # reported, never selected on: the paper's figures show this one
    train_loss: float
    iterations: int  # training iterations of this round (what the method costs)
    wall_seconds: float
    start_test_accuracy: float = math.nan  # the round's start state (θ_k ⊙ m, a fresh draw, ...) before training
    layer_density: dict[str, float] = field(default_factory=dict)
    reused: bool = False  # loaded from the cache (or a checkpoint) instead of trained here
    computed_iterations: int = 0  # iterations actually trained for it here (0 if reused, + any θ_k replay)
    path_iterations: int = 0  # controls: iterations of the ticket's round that produced this round's mask
    stopped_early: bool = False  # `patience` ended the round before its schedule did
    control: str = ""  # a search with controls: the control this round is of ("" = the ticket)
    # ShrinkBench's size and speed numbers (compression.py), from the architecture and `layer_density`
    compression_ratio: float = math.nan  # prunable weights / remaining ones
    compression_ratio_all_params: float = math.nan  # every parameter / the non-zero ones
    params_total: int = 0
    params_nonzero: int = 0
    dense_flops: float = math.nan  # multiply-adds per example of the dense network's conv and linear layers
    nonzero_flops: float = math.nan  # ... of this round's (each layer's scaled by its density)
    theoretical_speedup: float = math.nan  # dense_flops / nonzero_flops
    # [stability] points: linear mode connectivity of the round from its start (connectivity.py), in error fractions;
    # None when not measured (never NaN: records compare equal whether or not they were measured)
    val_instability: float | None = None
    test_instability: float | None = None  # reported, never selected on
    # ... and each path measured with the round (`Stability.to_dict()`): the round's own, and with
    # `[stability] dense_ks` round 0 has the dense network's from each θ_k
    stability_paths: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], **changes: Any) -> RoundResult:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in known}, **changes})


@dataclass
class TicketResult:
    config: dict[str, Any]
    rounds: list[RoundResult]
    device: str
    stopped: str | None = None  # reason, when a callback ended the search early
    kind: str = "ticket"  # "ticket", or "control" (evaluated on a ticket's masks)
    path: dict[str, int] | None = None  # controls: the ticket's rounds {"trained": n, "reused": m}

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "device": self.device, "stopped": self.stopped, "kind": self.kind,
                "path": self.path, "rounds": [r.to_dict() for r in self.rounds]}

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(strict_json.dumps(self.to_dict(), indent=2) + "\n")


@dataclass
class Level:
    """A ticket's masks for round r were just computed: the event controls branch on (see controls.py)."""

    round: int
    masks: Callable[[], Masks]  # m_r
    trained: Callable[[], State]  # the ticket's trained state of round r-1 (valid until the search resumes)
    key: str | None  # cache key of the ticket's round r (None without a cache)


@dataclass
class RoundState:
    """Everything about a finished round that a ticket file holds (see export.py)."""

    record: dict[str, Any]
    masks: Masks
    start: State  # the weights the round started from (masked)
    trained: State
    training: dict[str, Any]  # how it was trained: start, end, seeds, constant lr, shapes


Event = RoundJob | RoundResult | Level


# --------------------------------------------------------------------------- callbacks


class Callback:
    """Hooks of a ticket search, each a no-op here; override the ones you need.

    - `on_round_start(job)`: a round's training begins (it may have been packed with others).
    - `on_step(job, iteration, lr, step)`: after every optimiser step; `step.state(param)` is the optimiser's
      state (tests). Costs a call per step, so trainers skip it unless a callback overrides it.
    - `on_evaluation(job, iteration, evaluation)`: a validation point (progress bars count these).
    - `on_round_end(record)`: a round finished; raising `StopSearch` ends the search after it.
    - `on_state(state)`: a finished round's masks and weights (ticket savers), for searches that were asked.
    - `on_note(message)`: something a user should know once (e.g. a layer trained unpacked).
    """

    def on_round_start(self, job: RoundJob) -> None:
        pass

    def on_step(self, job: RoundJob, iteration: int, lr: float, step: Any) -> None:
        pass

    def on_evaluation(self, job: RoundJob, iteration: int, evaluation: Evaluation) -> None:
        pass

    def on_round_end(self, record: RoundResult) -> None:
        pass

    def on_state(self, state: RoundState) -> None:
        pass

    def on_note(self, message: str) -> None:
        pass


def overrides(callbacks: Iterable[Callback], hook: str) -> list[Callback]:
    """The callbacks that override `hook` (a trainer calls per-step hooks only on those)."""
    base = getattr(Callback, hook)
    return [cb for cb in callbacks if getattr(type(cb), hook, base) is not base]


class Callbacks(Callback):
    """Several callbacks as one, in order."""

    def __init__(self, callbacks: Sequence[Callback] | Callback | None = ()):
        if callbacks is None:
            callbacks = ()
        elif isinstance(callbacks, Callback):
            callbacks = (callbacks,)
        flat: list[Callback] = []
        for cb in callbacks:
            flat.extend(cb.members if isinstance(cb, Callbacks) else (cb,))
        self.members = flat

    def wants(self, hook: str) -> bool:
        return bool(overrides(self.members, hook))

    def on_round_start(self, job):
        for cb in self.members:
            cb.on_round_start(job)

    def on_step(self, job, iteration, lr, step):
        for cb in self.members:
            cb.on_step(job, iteration, lr, step)

    def on_evaluation(self, job, iteration, evaluation):
        for cb in self.members:
            cb.on_evaluation(job, iteration, evaluation)

    def on_round_end(self, record):
        for cb in self.members:
            cb.on_round_end(record)

    def on_state(self, state):
        for cb in self.members:
            cb.on_state(state)

    def on_note(self, message):
        for cb in self.members:
            cb.on_note(message)
