"""Per-round metrics: a number computed from a finished round, one registered class each (`registry.METRICS`).

The pump (`drivers.search_jobs`) computes every registered metric for every
round of every search, the ticket's and its branches', trained or loaded from
the cache, and adds its keys to `RoundResult.metrics`, before any callback
sees the round. From there the MLflow log, `rounds.csv`, `compare --metric`
and the report read every key. A plugin's metric is one class, registered
once:

    from ltstudy.engine.metrics import RoundMetric
    from ltstudy.engine.registry import METRICS

    @METRICS.register("first_layer_density")
    class FirstLayerDensity(RoundMetric):
        def compute(self, finished):
            return {"first_layer_density": next(iter(finished.record.layer_density.values()), 1.0)}

A metric that reads the round's masks or weights sets `needs_state = True`;
its searches then hand the pump each round's `RoundState` (for a round loaded
from the cache, its entry is read). Metrics are not part of any cache key: a
stored round gets them computed again.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .contracts import Contract
from .rounds import FIELDS, RoundResult, RoundState, is_number

if TYPE_CHECKING:
    from .compression import CostModel


@dataclass
class FinishedRound:
    """What a metric computes from: the round's record, the architecture's cost model, and (when it asked) the
    round's masks and weights."""

    record: RoundResult
    cost: CostModel  # per-layer weights and multiply-adds of the search's model
    state: RoundState | None = None  # masks, start and trained weights: for metrics with `needs_state`


class RoundMetric(Contract):
    """A per-round metric: `compute` returns {key: number}; `needs_state` asks for the round's masks and weights."""

    needs_state: ClassVar[bool] = False

    @abstractmethod
    def compute(self, finished: FinishedRound) -> Mapping[str, float]:
        """The round's numbers (keys of your choosing, none of them a fixed field of `RoundResult`)."""


def add_metrics(metrics: list[RoundMetric], finished: FinishedRound) -> None:
    """Each metric's keys added to the record (a key that names a fixed field, or a value that is not a number,
    is a bug of the metric's: one line naming it)."""
    for metric in metrics:
        for key, value in metric.compute(finished).items():
            if key in FIELDS or not is_number(value):
                raise ValueError(f"round metric {type(metric).__name__} gave {key} = {value!r}: a metric's key may "
                                 f"not be a fixed field of a round ({', '.join(sorted(FIELDS))}) and its value must "
                                 "be a number")
            finished.record.metrics[key] = value if isinstance(value, int) else float(value)
