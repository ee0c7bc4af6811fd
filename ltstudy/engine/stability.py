"""Stability to SGD noise: linear mode connectivity (Frankle, Dziugaite, Roy and Carbin, ICML 2020).

From a start state (θ_k of the dense network, or a ticket round's start m ⊙ θ_k)
two copies train to the end of the round with different data orders and
everything else the same (the mask, dropout's stream, the schedule from k, a
fresh optimiser as a rewound round has). The error is evaluated at `points`
evenly spaced points of the linear path between their end states, both ends
included; the instability is the largest error on the path minus the mean of
the two end points' errors. The paper calls a start stable when it is below 2
points (`STABLE`); the earliest stable k is the principled rewinding point.

Validation errors are what selects (the earliest stable k); test errors are
reported beside them. Both ends are masked, so every point of the path is too.
A model with batch norm gets its running statistics recomputed at each point
on a fixed subset of the training split (`BN_EXAMPLES`, fewer on a small
split, from the data-order seed's stream), the states' own statistics being
meaningless in between.

Copy A trains with the search's own data order, so for a ticket's round it is
the round as the search trained it (from the training cache when that holds
it): only copy B is trained for a ticket. Patience must be off (both copies
train to the end).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from . import pruning
from .cache import RoundCache
from .config import TicketConfig
from .data import Dataset
from .drivers import drive
from .errors import ConfigError
from .round_protocol import clone_state, evaluate
from .rounds import Callback, Callbacks, Masks, RoundJob, RoundState, State
from .seeds import DROPOUT, STABILITY_COPY, derived_seed
from .ticket import TicketSearch
from .training import train

POINTS = 30  # the paper's number of points on the path
STABLE = 0.02  # the paper's threshold: stable when the error rises by less than 2 points
BN_EXAMPLES = 2048
BN_BATCH = 256


@dataclass
class Stability:
    """One start's two copies and the path between them (errors are fractions, not points)."""

    label: str  # "dense" or "ticket"
    k: int
    round: int
    density: float
    alphas: list[float]
    val_errors: list[float]
    test_errors: list[float]
    data_orders: tuple[int, int]
    reused: bool = False  # copy A came from the training cache

    @property
    def val_instability(self) -> float:
        return instability(self.val_errors)

    @property
    def test_instability(self) -> float:
        return instability(self.test_errors)

    def stable(self, threshold: float = STABLE) -> bool:
        return self.val_instability < threshold

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "val_instability": self.val_instability,
                "test_instability": self.test_instability}


def instability(errors: Sequence[float]) -> float:
    """The largest error on the path minus the mean of its two end points' errors."""
    return max(errors) - (errors[0] + errors[-1]) / 2


def earliest_stable(results: Sequence[Stability], threshold: float = STABLE) -> Stability | None:
    """The dense start with the smallest k whose validation instability is below `threshold`."""
    stable = sorted((r for r in results if r.label == "dense" and r.stable(threshold)), key=lambda r: r.k)
    return stable[0] if stable else None


@dataclass
class _Start:
    label: str
    round: int
    state: State
    masks: Masks
    dropout_seed: int | None
    trained: State | None = None  # copy A's end state, when the search already trained it


@dataclass
class StabilityAnalysis:
    """Stability of the dense network at each k of `ks` and of the ticket of `cfg` at each of `rounds`."""

    cfg: TicketConfig
    data: Dataset
    cache: RoundCache | None = None
    points: int = POINTS
    copy_seed: int | None = None  # copy B's data order; default: a stream of its own from copy A's
    callbacks: list[Callback] = field(default_factory=list)

    def __post_init__(self):
        if self.cfg.train.patience:
            raise ConfigError("stability analysis trains both copies to the end of the round: set train.patience "
                              "= 0 (--patience 0)")
        if self.points < 2:
            raise ConfigError(f"a path needs at least its two end points, got points = {self.points}")

    def dense(self, ks: Sequence[int]) -> list[Stability]:
        out = []
        for k in ks:
            search = TicketSearch(self.cfg.replace({"prune.rewind_iter": k}), self.data, self.cache)
            start = _Start("dense", 0, clone_state_of(search.ensure_theta_k()), search.masks,
                           derived_seed(search.seeds.dropout, DROPOUT, 0))
            out.append(self._measure(search, start, k))
        return out

    def ticket(self, rounds: Sequence[int]) -> list[Stability]:
        search = TicketSearch(self.cfg, self.data, self.cache)
        wanted, starts = set(rounds), {}

        class Keep(Callback):
            def on_state(self, state: RoundState) -> None:
                r = state.record["round"]
                if r in wanted:
                    starts[r] = _Start("ticket", r, clone_state_of(state.start),
                                       {n: m.clone() for n, m in state.masks.items()},
                                       state.training["dropout_seed"], clone_state_of(state.trained))

        last = max(rounds)
        if last > search.n_rounds:
            raise ValueError(f"the ticket search has rounds 0..{search.n_rounds}, not {last}")
        search.n_rounds = last
        drive(search, [Keep(), *self.callbacks])
        k = search.sched.rewind_iter
        return [self._measure(search, starts[r], k) for r in sorted(wanted)]

    def _measure(self, search: TicketSearch, start: _Start, k: int) -> Stability:
        a_seed = search.seeds.data_order
        b_seed = self.copy_seed if self.copy_seed is not None else derived_seed(a_seed, STABILITY_COPY)
        ends = []
        for i, seed in enumerate((a_seed, b_seed)):
            if i == 0 and start.trained is not None and start.label == "ticket":
                ends.append(start.trained)
                continue
            model = search.model
            model.load_state_dict(start.state)
            job = RoundJob(start.round, model, start.masks, search.cfg.train, search.sched, seed, start.dropout_seed,
                           k, search.sched.iterations, label=f"stability {start.label} copy {'AB'[i]}",
                           evaluate=False)
            train(job, self.data, Callbacks(self.callbacks))
            ends.append(clone_state(model))
        alphas = [i / (self.points - 1) for i in range(self.points)]
        val, test = [], []
        for a in alphas:
            v, t = path_errors(search.model, ends[0], ends[1], a, start.masks, self.data, a_seed)
            val.append(v)
            test.append(t)
        return Stability(start.label, k, start.round, pruning.density(start.masks), alphas, val, test,
                         (a_seed, b_seed), reused=start.trained is not None and start.label == "ticket")


def clone_state_of(state: State) -> State:
    return {n: t.detach().clone() for n, t in state.items()}


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


__all__ = ["POINTS", "STABLE", "Stability", "StabilityAnalysis", "earliest_stable", "instability"]
