"""What watches a search: a `Callback`, a base class of named no-op hooks (as Lightning's).

A consumer of a search (progress bars, a ticket saver, a study's MLflow log,
its pruner reports and stop rules) is a subclass that overrides the hooks it
needs. The round hooks come from the pump (`drivers.search_jobs`), the
training hooks from the trainer, whichever driver runs the search (solo or
packed) and whether the round is the ticket's or a branch's (`record.control`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .rounds import Evaluation, RoundJob, RoundResult, RoundState


class Callback:
    """Hooks of a ticket search, each a no-op here; override the ones you need.

    - `on_round_start(job)`: a round's training begins (it may have been packed with others).
    - `on_step(job, iteration, lr, step)`: after every optimiser step; `step.state(param)` is the optimiser's
      state (tests). Costs a call per step, so trainers skip it unless a callback overrides it.
    - `on_evaluation(job, iteration, evaluation)`: a validation point (progress bars count these).
    - `on_state(state)`: a finished round's masks and weights (ticket savers), just before its `on_round_end`;
      a search produces them only when a callback overrides this hook.
    - `on_round_end(record)`: a round finished, its metrics filled; raising `StopSearch` ends the search after it.
    - `on_note(message)`: something a user should know once (e.g. a layer trained unpacked).
    """

    def on_round_start(self, job: RoundJob) -> None:
        pass

    def on_step(self, job: RoundJob, iteration: int, lr: float, step: Any) -> None:
        pass

    def on_evaluation(self, job: RoundJob, iteration: int, evaluation: Evaluation) -> None:
        pass

    def on_state(self, state: RoundState) -> None:
        pass

    def on_round_end(self, record: RoundResult) -> None:
        pass

    def on_note(self, message: str) -> None:
        pass


def overrides(callbacks: Iterable[Callback], hook: str) -> list[Callback]:
    """The callbacks that override `hook` (a trainer calls per-step hooks only on those)."""
    base = getattr(Callback, hook)
    return [cb for cb in callbacks if getattr(type(cb), hook, base) is not base]


class Callbacks(Callback):
    """Several callbacks as one, in order."""

    def __init__(self, callbacks: Sequence[Callback | None] | Callback | None = ()):
        if callbacks is None:
            callbacks = ()
        elif isinstance(callbacks, Callback):
            callbacks = (callbacks,)
        flat: list[Callback] = []
        for cb in callbacks:
            if cb is not None:
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

    def on_state(self, state):
        for cb in self.members:
            cb.on_state(state)

    def on_round_end(self, record):
        for cb in self.members:
            cb.on_round_end(record)

    def on_note(self, message):
        for cb in self.members:
            cb.on_note(message)
