"""The shared vocabulary of a ticket search: jobs, results, levels and states.

A search (search.py) is a generator of events: a `RoundJob` asks its driver to
train one round (the driver sends back the `TrainResult`), a `RoundState`
carries a finished round's masks and weights (only when its pump asks for
them), and a `RoundResult` is a finished round. A `Level` is what a branch
(branches/) starts from: the ticket's masks m_r and the weights around them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import strict_json

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import Schedule, TrainConfig
    from .mask_updates import MaskUpdates
    from .seeds import Seeds

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
    mask_updates: MaskUpdates | None = None  # masks that change during training (dynamic sparse training)


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
    """A finished round: the fixed fields every round has, and `metrics`, an open mapping of per-round numbers.

    A metric is whatever adds a key: a registered `metrics.RoundMetric` (the
    compression and FLOPs of compression.py, a plugin's own), or the search
    itself (`[stability]`'s val_instability and test_instability, and
    level_barrier and level_barrier_test, where measured). `to_dict()` puts
    the metrics beside the fixed fields, so a stored round reads the same
    whatever metrics existed when it was stored (the compression numbers were
    fields once); `from_dict()` takes every other number back as a metric.
    """

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
    # [stability]: each path measured with the round (`Stability.to_dict()`): the round's own, and with
    # `[stability] dense_ks` round 0 has the dense network's from each θ_k
    stability_paths: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # name -> value; absent when not measured

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in dataclasses.asdict(self).items() if k != "metrics"}, **self.metrics}

    @classmethod
    def from_dict(cls, d: dict[str, Any], **changes: Any) -> RoundResult:
        known = FIELDS - {"metrics"}
        metrics = {k: v for k, v in d.items() if k not in known and is_number(v)}
        return cls(**{**{k: v for k, v in d.items() if k in known}, "metrics": metrics, **changes})


FIELDS = frozenset(f.name for f in dataclasses.fields(RoundResult))  # a metric may not take one of these names


def is_number(value: Any) -> bool:
    """A per-round number (an int or a float, not a flag): what a stored round's metric is."""
    return isinstance(value, int | float) and not isinstance(value, bool)


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
    """Level r of a ticket search, as a branch starts from it (branches/): m_r and the weights around it.

    The callables are valid until the search resumes (they may read the
    ticket's live model, or its cache entries).
    """

    round: int
    masks: Callable[[], Masks]  # m_r, the ticket's masks of round r
    trained: Callable[[], State]  # the ticket's trained state of round r-1
    theta0: State  # the ticket's initialisation
    theta_k: Callable[[], State]  # the state the ticket rewinds to (θ0 when k = 0)
    seeds: Seeds  # the ticket's seeds
    key: str | None  # cache key of the ticket's round r (None without a cache)


@dataclass
class RoundState:
    """A finished round's masks and weights (what a ticket file holds, export.py), just before its `record`."""

    record: RoundResult
    masks: Masks
    start: State  # the weights the round started from (masked)
    trained: State
    training: dict[str, Any]  # how it was trained: start, end, seeds, constant lr, shapes


Event = RoundJob | RoundState | RoundResult
