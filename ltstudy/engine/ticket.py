"""Ticket search: iterative magnitude pruning (IMP) with rewinding — the engine.

This module imports neither optuna nor mlflow. `run()` does every round and
calls `on_round` after each finished one; raising `StopSearch` there ends the
search early and keeps the rounds done so far.

A search is a generator of *events* (`events()`): a `RoundJob` asks its
driver to train one round (the driver sends back the `TrainResult`), and a
`RoundResult` is a finished round to report. `run()` is the plain driver that
trains each job as it comes; the packed trainer (`packing.py`) drives many
searches at once, training their jobs side by side in one batched network.

The ticket (the IMP path), after each pruning step (k = rewind_iter):
- rewind:    survivors <- θ_k, retrain iterations k..T (k = 0: Frankle & Carbin's ticket).
- finetune:  keep the trained weights, train T-k more iterations at the final learning rate.
- lr-rewind: keep the trained weights, replay the learning-rate schedule from k (Renda et al. 2020).
The paper's controls (`reinit = "random"`, `mask = "random"`) are evaluated
on this path's masks by `controls.ControlSearch`.
Each round starts with a fresh optimiser. The data order depends on the seed
and the iteration only, so a rewound round replays the batches from k.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import pruning
from .cache import CACHE_VERSION, RoundCache, content_key, engine_digest
from .config import Schedule, TicketConfig, TrainConfig
from .data import Dataset, load_dataset
from .models import build_model
from .registry import check_pair
from .training import DivergedError, TrainResult, clone_state, lr_at, resolve_device, train


class StopSearch(Exception):
    """Raised by an `on_round` callback to end the search after the current round."""

    def __init__(self, reason: str = "stopped"):
        super().__init__(reason)
        self.reason = reason


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

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


@dataclass
class RoundJob:
    """One round's training, as a driver needs it: the model holds the start state and is trained in place."""

    round: int
    model: nn.Module
    masks: pruning.Masks
    train: TrainConfig
    sched: Schedule
    data_seed: int  # data order and augmentations
    dropout_seed: int
    start: int  # first schedule iteration
    end: int  # schedule iteration to stop at
    capture_at: int | None = None  # snapshot the state after this many iterations (θ_k)
    constant_lr: float | None = None  # fine-tuning: this rate instead of the schedule
    label: str = ""  # for progress displays: "round 3", "ticket round 2"


@dataclass
class Level:
    """A ticket's masks for round r were just computed: the event controls branch on (see controls.py)."""

    round: int
    masks: Callable[[], pruning.Masks]  # m_r
    trained: Callable[[], dict[str, torch.Tensor]]  # the ticket's trained state of round r-1 (valid until resumed)
    key: str | None  # cache key of the ticket's round r (None without a cache)


Event = RoundJob | RoundResult | Level
RoundCallback = Callable[[RoundResult], None]
StateCallback = Callable[[dict, "pruning.Masks", dict, dict, dict], None]
ProgressCallback = Callable[[RoundJob, int, int], None]  # job, iterations done, iterations of the job


def derived_seed(seed: int, *parts: int) -> int:
    """Distinct, reproducible streams per (purpose, round) from one user seed."""
    h = seed
    for p in parts:
        h = (h * 1_000_003 + p + 1) % (2**63 - 1)
    return h


# Purposes of the derived seeds (never reuse a number for another purpose).
DROPOUT, REINIT, RANDOM_MASK = 3, 2, 4


def train_job(job: RoundJob, data: Dataset, progress: ProgressCallback | None = None) -> TrainResult:
    """Train one job in place: the plain (unpacked) driver's trainer."""
    total = job.end - job.start
    on_eval = (lambda done, _ev: progress(job, done - job.start, total)) if progress else None
    return train(job.model, data, job.masks, job.train, job.sched, seed=job.data_seed, dropout_seed=job.dropout_seed,
                 start=job.start, end=job.end, capture_at=job.capture_at, constant_lr=job.constant_lr,
                 on_eval=on_eval)


def search_jobs(search: TicketSearch | Any, on_round: RoundCallback | None = None
                ) -> Generator[RoundJob, TrainResult, TicketResult]:
    """A search as a job generator: yields its RoundJobs, hands its RoundResults to `on_round`.

    `StopSearch` raised by `on_round` ends the search with the rounds so far; a
    DivergedError thrown in goes into the search (which lets it out). Drivers
    (`drive_jobs`, packing.drive_packed) train what it yields.
    """
    events = search.events()
    reply: TrainResult | None = None
    thrown: BaseException | None = None
    try:
        while True:
            try:
                event = events.throw(thrown) if thrown is not None else events.send(reply)
            except StopIteration as done:
                return done.value
            reply, thrown = None, None
            if isinstance(event, RoundJob):
                try:
                    reply = yield event
                except DivergedError as exc:
                    thrown = exc
            elif isinstance(event, RoundResult) and on_round is not None:
                try:
                    on_round(event)
                except StopSearch as stop:
                    events.close()
                    return search.result(stop.reason)
    finally:
        events.close()


def drive_jobs(jobs: Generator[RoundJob, TrainResult, Any], data: Dataset,
               progress: ProgressCallback | None = None) -> Any:
    """Train a job generator's jobs one after another (the plain driver); returns what it returns.

    A training that diverges, or Ctrl-C, is thrown into the generator, whose
    own code decides what it means (a search lets it out; a study trial
    records a diverged trial, or closes its run and re-raises).
    """
    reply: TrainResult | None = None
    error: BaseException | None = None
    while True:
        try:
            job = jobs.throw(error) if error is not None else jobs.send(reply)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            reply = train_job(job, data, progress)
        except (DivergedError, KeyboardInterrupt) as exc:
            error = exc


def drive(search: TicketSearch | Any, on_round: RoundCallback | None = None,
          progress: ProgressCallback | None = None) -> TicketResult:
    """Run a search's events to the end, training each job as it comes."""
    return drive_jobs(search_jobs(search, on_round), search.data, progress)


class TicketSearch:
    """The IMP path of one config (the ticket); `run()` does all rounds, tests may step it by hand."""

    kind = "ticket"

    def __init__(self, cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None):
        if cfg.prune.reinit == "random" or cfg.prune.mask == "random":
            raise ValueError("a control config runs as controls.ControlSearch (use ticket_search())")
        self.cfg = cfg
        self.cache = cache
        self.device = resolve_device(cfg.device)
        check_pair(cfg.model.name, cfg.data.name)
        self.data = data if data is not None else load_dataset(cfg.data, self.device)
        self.sched = cfg.resolve_schedule(len(self.data.train))
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes,
                                 cfg.model.dropout).to(self.device)
        self.layers = pruning.prunable_layers(self.model)
        self.rates = pruning.layer_rates(self.layers, cfg.prune)
        self.shared = pruning.globally_ranked(self.layers, cfg.prune)
        self.n_rounds = pruning.plan_rounds(self.layers, self.rates, cfg.prune)
        if cfg.prune.one_shot:
            self.rates = pruning.one_shot_rates(self.layers, self.rates, self.shared, cfg.prune.target_density)
        self.theta0 = clone_state(self.model)
        self.theta_k: dict[str, torch.Tensor] | None = None
        self.masks = pruning.full_masks(self.model, self.layers)
        self.records: list[RoundResult] = []
        # Called for every finished round with (record, masks, start state, trained state, how it was trained):
        # export.TicketSaver writes tickets with it.
        self.on_state: StateCallback | None = None
        self._replayed = 0  # iterations re-run to rebuild θ_k, charged to the next trained round
        self._digests: dict[str, str | None] = {}  # content digests: "dense", "theta_k", and round numbers
        self._make_keys()

    # ------------------------------------------------------------------ cache keys

    def _make_keys(self) -> None:
        """Content keys: everything that determines an entry, and nothing that doesn't.

        The dense round depends on the engine's code, the data read, the model,
        the training settings and the seed (not on k, the pruning settings or
        the number of rounds); θ_k adds k and the dense entry's digest; round r
        adds every pruning setting except how many rounds follow it, and the
        digests of round r-1's entry and of θ_k.
        """
        c = self.cfg
        data = {k: v for k, v in dataclasses.asdict(c.data).items() if k not in ("root", "download")}
        self.dense_key = content_key("dense", CACHE_VERSION, engine_digest(), torch.__version__.split("+")[0],
                                     self.device.type, self.data.digest, data, dataclasses.asdict(c.model),
                                     dataclasses.asdict(c.train), c.seed)
        prune = dataclasses.asdict(c.prune)
        prune.pop("rounds")
        if not prune["one_shot"]:
            prune.pop("target_density")
        prune["rewind_iter"] = self.sched.rewind_iter
        self.rounds_key = content_key("rounds", self.dense_key, prune)

    @property
    def theta_k_key(self) -> str:
        return content_key("theta_k", self._digests.get("dense"), self.sched.rewind_iter)

    def _uses_theta_k(self) -> bool:
        return self.cfg.prune.reinit == "rewind" and self.sched.rewind_iter > 0

    def round_key(self, round_: int) -> str:
        """Round 0 is the dense entry; round r is keyed by its parent's (round r-1's) content digest."""
        if round_ == 0:
            return self.dense_key
        parent = self._digests.get("dense" if round_ == 1 else str(round_ - 1))
        theta_k = self._digests.get("theta_k") if self._uses_theta_k() else None
        return content_key(self.rounds_key, round_, parent, theta_k)

    # ------------------------------------------------------------------ one round (steps 3, 4 and 2 of IMP)

    def prune_masks(self, round_: int) -> None:
        """Step 3: new masks from the trained weights."""
        self.masks = pruning.prune(self.model, self.masks, self.rates, self.shared)

    def reset(self, round_: int) -> None:
        """Step 4: the survivors' new start, by the re-init strategy."""
        if self.cfg.prune.reinit == "rewind":
            self.model.load_state_dict(self.ensure_theta_k())
        pruning.apply_masks(self.model, self.masks)

    def prune_and_reset(self, round_: int) -> None:
        self.prune_masks(round_)
        self.reset(round_)

    def job(self, round_: int, label: str = "round") -> RoundJob:
        reinit, k = self.cfg.prune.reinit, self.sched.rewind_iter
        start = 0 if round_ == 0 else k
        constant_lr = lr_at(self.sched.iterations - 1, self.cfg.train, self.sched) if (
            round_ > 0 and reinit == "finetune") else None
        return RoundJob(round_, self.model, self.masks, self.cfg.train, self.sched, self.cfg.seed,
                        derived_seed(self.cfg.seed, DROPOUT, round_), start, self.sched.iterations,
                        capture_at=k if round_ == 0 else None, constant_lr=constant_lr, label=f"{label} {round_}")

    def finish(self, round_: int, res: TrainResult) -> RoundResult:
        if round_ == 0:
            self.theta_k = res.snapshot if res.snapshot is not None else None
        pruning.check_masks_hold(self.model, self.masks)
        rec = record(round_, self.masks, res)
        rec.computed_iterations += self._replayed
        self._replayed = 0
        return rec

    def train_round(self, round_: int, progress: ProgressCallback | None = None) -> TrainResult:
        """Train round r on the current state (tests step the search by hand with this)."""
        res = train_job(self.job(round_), self.data, progress)
        if round_ == 0:
            self.theta_k = res.snapshot
        pruning.check_masks_hold(self.model, self.masks)
        return res

    # ------------------------------------------------------------------ all rounds

    def events(self, levels_up_to: int | None = None) -> Generator[Event, TrainResult | None, TicketResult]:
        """Rounds 0..R as events; the longest stored prefix is loaded instead of trained.

        With `levels_up_to = L` (for controls) the search also announces each
        round's masks as a `Level` event, and ends after announcing level L
        without training round L.
        """
        restored = self.restore() if self.cache is not None else []
        last = self.n_rounds if levels_up_to is None else levels_up_to
        for r in range(last + 1):
            if r < len(restored):
                rec = restored[r]
                if levels_up_to is not None and r > 0:
                    yield Level(r, lambda r=r: self._stored(r)["masks"], lambda r=r: self._stored(r - 1)["state"],
                                self.round_key(r))
                if self.on_state is not None and (r < last or levels_up_to is None):
                    entry = self._stored(r)
                    masks = entry["masks"] if r > 0 else pruning.full_masks(self.model, self.layers)
                    self.on_state(rec.to_dict(), masks, entry["theta0"] if r == 0 else entry["start"],
                                  entry["state"], self.training_info(self.job(r)))
            else:
                t0 = time.perf_counter()
                if r > 0:
                    self.prune_masks(r)
                    if levels_up_to is not None:
                        yield Level(r, lambda: self.masks, lambda: self.model.state_dict(),
                                    self.round_key(r) if self.cache is not None else None)
                        if r == levels_up_to:
                            break
                    self.reset(r)
                job = self.job(r, "ticket round" if levels_up_to is not None else "round")
                start = clone_state(self.model) if (self.cache is not None or self.on_state is not None) else None
                res = yield job
                rec = self.finish(r, res)
                rec.wall_seconds = round(time.perf_counter() - t0, 4)
                if self.cache is not None:
                    self.checkpoint(r, [*self.records, rec], start)
                if self.on_state is not None:
                    self.on_state(rec.to_dict(), self.masks, start, self.model.state_dict(), self.training_info(job))
            if r < last or levels_up_to is None:
                self.records.append(rec)
                yield rec
        return self.result()

    def training_info(self, job: RoundJob) -> dict[str, Any]:
        """How a round was trained, for retraining a saved ticket exactly."""
        return {"start": job.start, "end": job.end, "data_seed": job.data_seed, "dropout_seed": job.dropout_seed,
                "constant_lr": job.constant_lr, "input_shape": list(self.data.input_shape),
                "num_classes": self.data.num_classes}

    def run(self, on_round: RoundCallback | None = None, progress: ProgressCallback | None = None) -> TicketResult:
        return drive(self, on_round, progress)

    def result(self, stopped: str | None = None) -> TicketResult:
        return TicketResult(self.cfg.to_dict(), list(self.records), str(self.device), stopped, self.kind)

    # ------------------------------------------------------------------ θ_k

    def ensure_theta_k(self) -> dict[str, torch.Tensor]:
        """θ_k: θ0 when k = 0, else captured in round 0, stored, or replayed (k iterations from θ0)."""
        k = self.sched.rewind_iter
        if k == 0:
            self.theta_k = self.theta0
        if self.theta_k is not None:
            return self.theta_k
        if self.cache is not None and self._digests.get("dense"):
            stored = self.cache.load(self.theta_k_key)
            if stored is not None:
                self.theta_k = {n: t.to(self.device) for n, t in stored["theta_k"].items()}
                self._digests["theta_k"] = self.cache.digest(self.theta_k_key)
                return self.theta_k
        # The dense run is stored for another k: replay its first k iterations (same data order, same dropout seed).
        replay = build_model(self.cfg.model.name, self.data.input_shape, self.data.num_classes,
                             self.cfg.model.dropout).to(self.device)
        replay.load_state_dict(self.theta0)
        result = train(replay, self.data, pruning.full_masks(replay, self.layers), self.cfg.train, self.sched,
                       seed=self.cfg.seed, dropout_seed=derived_seed(self.cfg.seed, DROPOUT, 0), capture_at=k, end=k,
                       evaluate_splits=False)
        self.theta_k = result.snapshot
        self._replayed += k
        self._save_theta_k()
        return self.theta_k

    def _save_theta_k(self) -> None:
        if self.cache is not None and self._uses_theta_k() and self.theta_k is not None and self._digests.get("dense"):
            self._digests["theta_k"] = self.cache.save(self.theta_k_key, {"theta_k": _cpu(self.theta_k)})

    # ------------------------------------------------------------------ cache and checkpoints

    def checkpoint(self, round_: int, records: list[RoundResult], start: dict[str, torch.Tensor] | None = None) -> None:
        """Store round `round_` atomically: the weights it started from and trained to, masks, the records so far."""
        assert self.cache is not None
        state = _cpu(self.model.state_dict())
        if round_ == 0:
            self._digests["dense"] = self.cache.save(self.dense_key, {
                "theta0": _cpu(self.theta0), "state": state, "records": [r.to_dict() for r in records]})
            self._save_theta_k()
        else:
            key = self.round_key(round_)
            self._digests[str(round_)] = self.cache.save(key, {
                "state": state, "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
                "start": _cpu(start) if start is not None else None, "records": [r.to_dict() for r in records]})

    def _stored(self, round_: int) -> dict[str, Any]:
        """A stored entry of this path (the dense one for round 0), as its digest chain names it."""
        assert self.cache is not None
        key = self.round_key(round_)
        entry = self.cache.load(key, self._digests.get("dense" if round_ == 0 else str(round_)))
        if entry is None:
            raise RuntimeError(f"cache entry of round {round_} vanished while in use ({self.cache.root}); run again")
        return entry

    def restore(self) -> list[RoundResult]:
        """Load the longest stored prefix of rounds; returns its records (marked reused).

        The prefix is followed through the entries' content digests: round r
        is looked up under its parent's digest, so a prefix is always one
        consistent run, whichever worker wrote which entry.
        """
        assert self.cache is not None
        self._digests["dense"] = self.cache.digest(self.dense_key)
        if self._digests["dense"] is None:
            return []
        if self._uses_theta_k():
            self._digests["theta_k"] = self.cache.digest(self.theta_k_key)
        chain = 0
        while chain < self.n_rounds:
            found = self.cache.digest(self.round_key(chain + 1))
            if found is None:
                break
            chain += 1
            self._digests[str(chain)] = found
        for last in range(chain, -1, -1):  # a damaged entry: fall back to its parent
            entry = self.cache.load(self.round_key(last), self._digests["dense" if last == 0 else str(last)])
            if entry is not None and (last > 0 or _same_state(entry["theta0"], self.theta0)):
                break
            for r in range(last, chain + 1):
                self._digests.pop("dense" if r == 0 else str(r), None)
        else:
            return []
        self.model.load_state_dict(entry["state"])
        if last > 0:
            self.masks = {n: entry["masks"][n].to(self.device, self.masks[n].dtype) for n in self.masks}
        if self._uses_theta_k() and self._digests.get("theta_k") is None and last < self.n_rounds:
            self.ensure_theta_k()  # (replayed and stored: rounds after the prefix are keyed by its digest)
        return [RoundResult(**{**d, "reused": True, "computed_iterations": 0}) for d in entry["records"][:last + 1]]


def record(round_: int, masks: pruning.Masks, res: TrainResult) -> RoundResult:
    return RoundResult(
        round=round_, density=pruning.density(masks), weights_remaining=pruning.remaining(masks),
        val_loss=res.val_loss, val_accuracy=res.val_accuracy, early_stop_iteration=res.early_stop_iteration,
        test_accuracy=res.test_accuracy, test_accuracy_at_early_stop=res.test_accuracy_at_early_stop,
        train_loss=res.train_loss, iterations=res.iterations, wall_seconds=round(res.wall_seconds, 4),
        start_test_accuracy=res.start_test_accuracy,
        layer_density=pruning.layer_density(masks), computed_iterations=res.iterations,
        stopped_early=res.stopped_early)


def ticket_search(cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None):
    """The search `cfg` describes: the ticket itself, or a control evaluated on the ticket's masks."""
    if cfg.prune.reinit == "random" or cfg.prune.mask == "random":
        from .controls import ControlSearch

        return ControlSearch(cfg, data, cache)
    return TicketSearch(cfg, data, cache)


def run_ticket_search(cfg: TicketConfig, on_round: RoundCallback | None = None,
                      progress: ProgressCallback | None = None, data: Dataset | None = None,
                      cache: RoundCache | None = None) -> TicketResult:
    """Run IMP for `cfg` (or its control): round 0 dense, then `rounds` prune-reset-retrain rounds."""
    return ticket_search(cfg, data, cache).run(on_round, progress)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].detach().cpu()) for k in a)
