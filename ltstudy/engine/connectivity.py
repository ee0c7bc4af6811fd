"""Linear mode connectivity (Frankle, Dziugaite, Roy and Carbin, ICML 2020): two copies from one start, and the path.

From a start state (θ_k of the dense network, or a ticket round's start m ⊙ θ_k)
two copies train to the end of the round with different data orders and
everything else the same (the mask, dropout's stream, the schedule from k, a
fresh optimiser as a rewound round has). The error is evaluated at `points`
evenly spaced points of the linear path between their end states, both ends
included; the instability is the largest error on the path minus the mean of
the two end points' errors. The paper calls a start stable when it is below 2
points (`STABLE`).

Validation errors are what selects; test errors are reported beside them.
Both ends are masked, so every point of the path is too. A model with batch
norm gets its running statistics recomputed at each point on a fixed subset of
the training split (`BN_EXAMPLES`, fewer on a small split, from the data-order
seed's stream), the states' own statistics being meaningless in between.

Copy A has the search's own data order: when the search trained it already (a
ticket's round, or the dense round 0 for k = 0), its end state is used and
only copy B is trained. With a training cache and a key that determines the
start, each copy's end state is stored under that key, its data order and k,
so measuring a cached round again (or in `ltstudy stability`) trains nothing.
`measure` is a job generator (drivers.py): its copies train through the one
round loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import pruning
from .cache import RoundCache
from .config import Schedule, TrainConfig
from .data import Dataset
from .hashing import digest
from .linear_paths import STABILITY_POINTS, STABLE, StartKind
from .round_protocol import clone_state, evaluate
from .rounds import Masks, RoundJob, State, TrainResult
from .seeds import STABILITY_COPY, derived_seed

POINTS = STABILITY_POINTS
BN_EXAMPLES = 2048
BN_BATCH = 256


@dataclass
class Stability:
    """One start's two copies and the path between them (errors are fractions, not points)."""

    label: StartKind
    k: int
    round: int
    density: float
    alphas: list[float]
    val_errors: list[float]
    test_errors: list[float]
    data_orders: tuple[int, int]
    reused: bool = False  # copy A is the search's own round (not trained again)
    trained_iterations: int = 0  # iterations trained here for the copies (0 when the cache held them)

    @property
    def val_instability(self) -> float:
        return instability(self.val_errors)

    @property
    def test_instability(self) -> float:
        return instability(self.test_errors)

    def stable(self, threshold: float = STABLE) -> bool:
        return self.val_instability < threshold

    def __post_init__(self) -> None:
        self.label = StartKind(self.label)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "label": str(self.label), "val_instability": self.val_instability,
                "test_instability": self.test_instability}


def instability(errors: Sequence[float]) -> float:
    """The largest error on the path minus the mean of its two end points' errors."""
    return max(errors) - (errors[0] + errors[-1]) / 2


@dataclass
class CopiesStart:
    """Where two copies start: the state (masked by `masks`), the round, and how the search trains it."""

    label: StartKind
    round: int
    state: State
    masks: Masks
    dropout_seed: int | None
    trained: State | None = None  # copy A's end state, when the search has trained it already

    def __post_init__(self) -> None:
        self.label = StartKind(self.label)


def copy_seeds(data_order: int, copy_seed: int | None) -> tuple[int, int]:
    """Copy A's data order (the search's) and copy B's (given, or a stream of its own)."""
    return data_order, derived_seed(data_order, STABILITY_COPY) if copy_seed is None else copy_seed


def measure(model: nn.Module, start: CopiesStart, train: TrainConfig, sched: Schedule, k: int, data: Dataset,
            seeds: tuple[int, int], points: int = POINTS, cache: RoundCache | None = None,
            key: str | None = None) -> Generator[RoundJob, TrainResult, Stability]:
    """Train the copies that are missing on `model` (a scratch network), then walk the path between them.

    `key` names the start (a cache key of the entry it comes from): with `cache`, copies are stored and reused.
    """
    ends, trained = [], 0
    device = next(iter(start.state.values())).device
    for i, seed in enumerate(seeds):
        if i == 0 and start.trained is not None:
            ends.append(start.trained)
            continue
        copy_key = digest("stability copy", key, start.label, k, seed) if cache is not None and key else None
        stored = cache.load(copy_key) if copy_key else None
        if stored is not None:
            ends.append({n: t.to(device) for n, t in stored["state"].items()})
            continue
        model.load_state_dict(start.state)
        yield RoundJob(start.round, model, start.masks, train, sched, seed, start.dropout_seed, k, sched.iterations,
                       label=f"stability {start.label} round {start.round} copy {'AB'[i]}", evaluate=False)
        ends.append(clone_state(model))
        trained += sched.iterations - k
        if copy_key:
            cache.save(copy_key, {"state": {n: t.detach().cpu() for n, t in ends[-1].items()}})
    alphas = [i / (points - 1) for i in range(points)]
    errors = [path_errors(model, ends[0], ends[1], a, start.masks, data, seeds[0]) for a in alphas]
    return Stability(start.label, k, start.round, pruning.density(start.masks), alphas, [v for v, _ in errors],
                     [t for _, t in errors], seeds, reused=start.trained is not None, trained_iterations=trained)


def interpolate_state(a: State, b: State, alpha: float) -> State:
    """(1 - α) a + α b for every floating tensor (integer buffers, e.g. batch norm's counter, from a)."""
    return {n: torch.lerp(a[n], b[n], alpha) if a[n].is_floating_point() else a[n].clone() for n in a}

@torch.no_grad()
def path_errors(model: nn.Module, a: State, b: State, alpha: float, masks: Masks, data: Dataset,
                seed: int) -> tuple[float, float]:
    """(validation error, test error) of the point α of the path from a to b, masked, batch norm recomputed."""
    model.load_state_dict(interpolate_state(a, b, alpha))
    pruning.apply_masks(model, masks)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        generator = torch.Generator().manual_seed(derived_seed(seed, STABILITY_COPY, 1))
        n = min(BN_EXAMPLES, len(data.train) // BN_BATCH * BN_BATCH) or len(data.train)
        idx = torch.randperm(len(data.train), generator=generator)[:n].to(data.train.x.device)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # (a cumulative average over equal batches: the subset's own mean)
        model.train()
        for chunk in idx.split(BN_BATCH):
            model(data.train.x[chunk])
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
    batch = 2048
    val = evaluate(model, data.val, batch)
    test = evaluate(model, data.test, batch)
    return 1.0 - val.accuracy, 1.0 - test.accuracy
