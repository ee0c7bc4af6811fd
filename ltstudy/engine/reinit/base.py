"""What a re-init strategy is: where the next round starts (state, iteration, learning rate) after pruning."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from ..contracts import Contract

if TYPE_CHECKING:
    from torch import nn

    from ..config import Schedule, TrainConfig
    from ..rounds import State


@dataclass
class Start:
    """What a round can start from: the search's θ_k, and the weights trained in the round before."""

    round: int
    seed: int
    theta_k: Callable[[], State]
    trained: Callable[[], State] | None  # None: the model holds the trained weights already


class Reinit(Contract):
    """A re-init strategy. Subclasses set the class attributes and implement `reset` (abstract: a class without it
    is refused when it is registered).

    - `rewinds`: the round starts from θ_k, so round 0 captures it (when k > 0); a pruning-at-initialisation
      control, scored on θ_k, needs such a ticket (branches/at_init.py).
    - `start(sched)`: the round's first schedule iteration (k for every ticket-finding strategy).
    - `constant_lr(train, sched)`: a fixed learning rate for the round, or None to follow the schedule.
    """

    rewinds: ClassVar[bool] = False

    def start(self, sched: Schedule) -> int:
        return sched.rewind_iter

    def constant_lr(self, train: TrainConfig, sched: Schedule) -> float | None:
        return None

    @abstractmethod
    def reset(self, model: nn.Module, start: Start) -> None:
        """Load the round's start into `model` (the caller masks it afterwards)."""
