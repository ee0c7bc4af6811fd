"""Drivers: what runs a search's events, one job at a time or many searches packed side by side.

A search (search.py) is a generator of events. `search_jobs` is the one pump
that turns any search into a *job generator*: it yields the RoundJobs to
train, receives their TrainResults, fills each finished round's metrics (every
class registered in `registry.METRICS`, compression.py's among them), hands
the round to the callbacks (`on_state`, when some want states, then
`on_round_end`; raising StopSearch ends the search with the rounds so far) and
returns the search's TicketResult. The study layer's trials are job
generators too (a trial's searches, one per seed, pumped here). `drive_jobs`
trains a job generator's jobs one after another (the solo trainer);
`drive_packed` trains many job generators' jobs side by side (packing/). Both
throw a training's DivergedError (and Ctrl-C) into the generator, whose own
code decides what it means. Either way each round goes through the one round
protocol (round_protocol.py), so every behaviour of a round is the same.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .callbacks import Callback, Callbacks
from .data import Dataset
from .errors import DivergedError, StopSearch
from .metrics import FinishedRound, RoundMetric, add_metrics
from .packing import PackedTrainer, job_key
from .registry import METRICS
from .rounds import RoundJob, RoundResult, RoundState, TicketResult, TrainResult
from .training import train

if TYPE_CHECKING:
    from .search import Search

JobSource = Generator[Any, Any, Any]  # yields RoundJobs, receives TrainResults, returns its result


def round_metrics() -> list[RoundMetric]:
    """One instance of every registered round metric (for one search)."""
    return [entry.load()() for entry in METRICS.values()]


def search_jobs(search: Search, callbacks: Callback | Sequence[Callback] | None = None
                ) -> Generator[RoundJob, TrainResult, TicketResult]:
    """Any search as a job generator, its rounds' metrics filled and handed to `callbacks` (the module docstring)."""
    callbacks = Callbacks(callbacks)
    metrics = round_metrics()
    events = search.events(states=callbacks.wants("on_state") or any(m.needs_state for m in metrics))
    reply: TrainResult | None = None
    thrown: BaseException | None = None
    state: RoundState | None = None
    try:
        while True:
            try:
                event = events.throw(thrown) if thrown is not None else events.send(reply)
            except StopIteration:
                return search.result()
            reply, thrown = None, None
            if isinstance(event, RoundJob):
                try:
                    reply = yield event
                except DivergedError as exc:
                    thrown = exc
            elif isinstance(event, RoundState):
                state = event
            elif isinstance(event, RoundResult):
                held, state = (state if state is not None and state.record is event else None), None
                add_metrics(metrics, FinishedRound(event, search.cost, held))
                try:
                    if held is not None:
                        callbacks.on_state(held)
                    callbacks.on_round_end(event)
                except StopSearch as stop:
                    events.close()
                    return search.result(stop.reason)
    finally:
        events.close()


def drive_jobs(jobs: JobSource, data: Dataset, callbacks: Callback | None = None) -> Any:
    """Train a job generator's jobs one after another (the solo trainer); returns what it returns.

    `callbacks` see every job's steps and evaluations (progress bars).
    """
    callbacks = Callbacks(callbacks)
    reply: TrainResult | None = None
    error: BaseException | None = None
    while True:
        try:
            job = jobs.throw(error) if error is not None else jobs.send(reply)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            reply = train(job, data, callbacks)
        except (DivergedError, KeyboardInterrupt) as exc:
            error = exc


def drive(search: Search, callbacks: Callback | Sequence[Callback] | None = None) -> TicketResult:
    """Run a search to the end, training each job as it comes; `callbacks` see its rounds and its training."""
    callbacks = Callbacks(callbacks)
    return drive_jobs(search_jobs(search, callbacks), search.data, callbacks)


# --------------------------------------------------------------------------- packed


def drive_packed(sources: Iterable[JobSource], data: Dataset, capacity: int, callbacks: Callback | None = None, *,
                 return_exceptions: bool = False, exact: bool = True, width: int | None = None,
                 block: int = 1) -> list[Any]:
    """Run job generators `capacity` at a time in packs; returns their return values in the order pulled.

    A generator yields RoundJobs and receives each job's TrainResult (or has
    the DivergedError thrown in at its yield); anything else it yields is
    answered with None. Whenever a generator finishes, the next one is pulled
    from `sources`. Jobs without a packed form are trained solo at once (each
    reason reported once through `callbacks.on_note`). An exception escaping a
    generator ends the run (the others are closed) and propagates, unless
    `return_exceptions`: then it is that generator's result.

    Jobs of one architecture share packs of at most `width` members (default:
    `capacity`, one pack); each pack takes `block` steps before the next one
    steps. On a CPU, narrow packs stepped in blocks keep each pack's state in
    cache (LeNet-300-100, 16 slots: 4 packs of 4 in blocks of 8 steps against
    one pack of 16: -2% to +10% in our runs); conv nets on large images gain
    nothing from width on a CPU (see benchmarks/README.md). Numbers depend on
    neither.
    """
    if capacity < 1 or block < 1 or (width is not None and width < 1):
        raise ValueError(f"capacity, width and block must be >= 1, got {capacity}, {width}, {block}")
    callbacks = _NotesOnce(callbacks)
    width = capacity if width is None else min(width, capacity)
    pending: Iterator[JobSource] = iter(sources)
    results: list[Any] = []
    live: dict[int, JobSource] = {}
    packs: dict[tuple, list[PackedTrainer]] = {}  # per architecture, packs of up to `width` members
    exhausted = False

    def advance(index: int, reply: Any = None, thrown: BaseException | None = None) -> None:
        """Run generator `index` until its next packable job is in a pack, or it ends."""
        gen = live[index]
        while True:
            try:
                event = gen.throw(thrown) if thrown is not None else gen.send(reply)
            except StopIteration as done:
                results[index] = done.value
                del live[index]
                return
            except Exception as exc:
                del live[index]
                if not return_exceptions:
                    raise
                results[index] = exc
                return
            reply, thrown = None, None
            if not isinstance(event, RoundJob):
                continue
            reason = PackedTrainer.supports(event)
            if reason is not None:
                callbacks.on_note(f"{reason}; trained unpacked")
                try:
                    reply = train(event, data, callbacks)
                except DivergedError as exc:
                    thrown = exc
                continue
            lanes = packs.setdefault(job_key(event, data), [])
            pack = next((p for p in lanes if p.free), None)
            if pack is None:
                pack = PackedTrainer(data, width, exact=exact, callbacks=callbacks)
                lanes.append(pack)
            pack.add(event, index)
            return

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and len(live) < capacity:
            try:
                gen = next(pending)
            except StopIteration:
                exhausted = True
                return
            results.append(None)
            live[len(results) - 1] = gen
            advance(len(results) - 1)

    try:
        fill()
        while live:
            for pack in [p for lanes in packs.values() for p in lanes]:
                for _ in range(block):
                    if not pack.busy:
                        break
                    for token, outcome in pack.step():
                        if isinstance(outcome, DivergedError):
                            advance(token, thrown=outcome)
                        else:
                            advance(token, reply=outcome)
                fill()
            for key, lanes in list(packs.items()):  # let go of emptied packs (their stacked tensors)
                packs[key] = [p for p in lanes if p.busy]
                if not packs[key]:
                    del packs[key]
    finally:
        for gen in live.values():
            gen.close()
    return results


class _NotesOnce(Callbacks):
    """Callbacks that hear each distinct note once (a pack notes an unpacked layer at every job)."""

    def __init__(self, callbacks: Callback | None):
        super().__init__(callbacks)
        self.noted: set[str] = set()

    def on_note(self, message: str) -> None:
        if message not in self.noted:
            self.noted.add(message)
            super().on_note(message)


def run_packed(searches: Iterable[Search], capacity: int, callbacks: Callback | None = None, *,
               watchers: Sequence[Callback | Sequence[Callback] | None] | None = None,
               return_exceptions: bool = False, exact: bool = True, width: int | None = None,
               block: int = 1) -> list[TicketResult | BaseException]:
    """Run searches packed `capacity` at a time; their TicketResults in the given order.

    `callbacks` see every job's training (and packing's notes); `watchers[i]`
    sees search i's rounds (raising StopSearch ends that search). Searches on
    different Dataset objects run in separate packs, one data set after another.
    """
    searches = list(searches)
    watchers = list(watchers) if watchers is not None else [None] * len(searches)
    if len(watchers) != len(searches):
        raise ValueError(f"{len(watchers)} watchers for {len(searches)} searches")
    results: list[Any] = [None] * len(searches)
    by_data: dict[int, list[int]] = {}
    for i, s in enumerate(searches):
        by_data.setdefault(id(s.data), []).append(i)
    for indices in by_data.values():
        out = drive_packed((search_jobs(searches[i], watchers[i]) for i in indices), searches[indices[0]].data,
                           capacity, callbacks, return_exceptions=return_exceptions, exact=exact, width=width,
                           block=block)
        for i, value in zip(indices, out, strict=True):
            results[i] = value
    return results
