"""The paper's controls, evaluated level by level on a winning ticket's masks.

Frankle & Carbin compare each winning ticket with two controls that change one
thing about it, level by level of the same IMP run:

- random re-initialisation (`reinit = "random"`): "we randomly reinitialize
  each winning ticket": the ticket's mask m_r at level r, with a fresh θ'0
  drawn from the same initialisation distribution, trained from iteration 0;
- random pruning (`mask = "random"`): a random mask with m_r's per-layer
  densities, started like the ticket (θ_k for rewinding, the trained weights
  for fine-tuning).

Both together is a random sparse network with the ticket's layer densities.
The strategies themselves are the registered classes (reinit/random_reinit.py,
masks/random_mask.py): a control's re-init strategy resets each level as it
would reset a ticket's round, and its mask rule picks the level's mask from the
ticket's. Each level r branches off the ticket's path (like open_lth's
branches): its own seed streams, its own training; level 0 is the path's dense
round itself. Two searches use the branches:

- `ControlSearch(cfg)`: one control config alone (`ltstudy ticket --reinit
  random`). The ticket's path (the strategies' `path`: magnitude masks,
  rewinding for random re-init) comes from the cache where it is stored, and is
  trained and stored otherwise, so a study that holds a ticket and its controls
  trains that path once.
- `TicketWithControls(cfg, controls)`: the ticket itself, every round of it,
  and at each level every control in `controls` (`[study] controls`): the
  trial's own ticket beside its own controls. Their records carry the
  control's name (`RoundResult.control`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Mapping

import torch

from . import pruning
from .cache import RoundCache
from .config import TicketConfig
from .data import Dataset
from .drivers import drive
from .hashing import digest
from .models import build_model
from .registry import CONTROLS, MASKS, REINITS
from .reinit.base import Start
from .round_protocol import clone_state
from .rounds import Callback, Callbacks, Event, Level, RoundJob, RoundResult, RoundState, TicketResult, TrainResult
from .seeds import DROPOUT, derived_seed
from .ticket import TicketSearch, cpu, record


def path_config(cfg: TicketConfig) -> TicketConfig:
    """The ticket whose masks a control uses: each control strategy replaced by the one it names as its path."""
    reinit, mask = REINITS.load(cfg.prune.reinit), MASKS.load(cfg.prune.mask)
    return cfg.replace({"prune.reinit": reinit.path if reinit.control else cfg.prune.reinit,
                        "prune.mask": mask.path if mask.control else cfg.prune.mask})


def control_config(ticket: TicketConfig, name: str) -> TicketConfig:
    """The config of control `name` (a registered set of overrides) of a ticket's config."""
    return ticket.replace(CONTROLS.load(name))


class _Branch:
    """One control's levels: its model, its masks at each level, and its cached records."""

    def __init__(self, cfg: TicketConfig, path: TicketSearch, cache: RoundCache | None, name: str = ""):
        self.cfg, self.path, self.cache, self.name = cfg, path, cache, name
        self.reinit, self.mask_rule = REINITS.load(cfg.prune.reinit)(), MASKS.load(cfg.prune.mask)()
        self.model = build_model(cfg.model.name, path.data.input_shape, path.data.num_classes,
                                 cfg.model.dropout).to(path.device)
        self.masks: pruning.Masks = {}

    def key(self, level: Level) -> str | None:
        if self.cache is None or not level.key:
            return None
        codes = [c for c in (REINITS.get(self.cfg.prune.reinit).code(), MASKS.get(self.cfg.prune.mask).code()) if c]
        s = self.cfg.resolved_seeds
        seeds = self.cfg.seed if len({self.cfg.seed, *dataclasses.astuple(s)}) == 1 else dataclasses.astuple(s)
        return digest("control", level.key, self.cfg.prune.reinit, self.cfg.prune.mask, seeds, *codes)

    def job(self, level: Level) -> RoundJob:
        """Level r's start: the level's mask (the ticket's, or a random one) and the re-init strategy's start."""
        r, seeds, sched = level.round, self.cfg.resolved_seeds, self.path.sched
        if self.mask_rule.at_init:  # (scored on θ_k, the start the ticket rewinds to, before any re-init)
            self.model.load_state_dict(self.path.ensure_theta_k())
        self.masks = self.mask_rule.at_start(self.model, level.masks(), seeds.mask, r, self.path.data)
        self.reinit.reset(self.model, Start(r, seeds.init, self.path.ensure_theta_k, level.trained))
        pruning.apply_masks(self.model, self.masks)
        label = f"control {self.name} round {r}" if self.name else f"control round {r}"
        return RoundJob(r, self.model, self.masks, self.cfg.train, sched, seeds.data_order,
                        derived_seed(seeds.dropout, DROPOUT, r),
                        self.reinit.start(sched), sched.iterations,
                        constant_lr=self.reinit.constant_lr(self.cfg.train, sched), label=label)

    def level(self, level: Level, states: Callback | None) -> Generator[Event, TrainResult | None, RoundResult]:
        """Level r: from the cache, or trained (as a job for the driver) and stored."""
        key = self.key(level)
        stored = self.cache.load(key) if key is not None else None
        if stored is not None:
            self.masks = {n: m.to(self.path.device, torch.float32) for n, m in stored["masks"].items()}
            self.model.load_state_dict(stored["state"])
            rec = RoundResult.from_dict(stored["record"], reused=True, computed_iterations=0, control=self.name)
            if states is not None:
                states.on_state(RoundState(self.path.cost.filled(rec), self.masks, stored["start"], stored["state"],
                                           stored["training"]))
            return rec
        t0 = time.perf_counter()
        job = self.job(level)
        start = clone_state(self.model)
        res = yield job
        pruning.check_masks_hold(self.model, self.masks)
        rec = record(level.round, self.masks, res)
        rec.control = self.name
        rec.wall_seconds = round(time.perf_counter() - t0, 4)
        training = self.path.training_info(job)
        if key is not None:
            self.cache.save(key, {"state": cpu(self.model.state_dict()), "start": cpu(start),
                                  "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
                                  "record": {**rec.to_dict(), "control": ""}, "training": training})
        if states is not None:
            states.on_state(RoundState(self.path.cost.filled(rec), self.masks, start, self.model.state_dict(),
                                       training))
        return rec


class ControlSearch:
    """One control config on its ticket's masks: the dense round, then level 1..L."""

    kind = "control"

    def __init__(self, cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None,
                 callbacks: Callback | list[Callback] | None = None):
        self.cfg = cfg
        self.cache = cache
        self.callbacks = Callbacks(callbacks)
        self.path = TicketSearch(path_config(cfg), data, cache)
        self.data, self.device, self.sched = self.path.data, self.path.device, self.path.sched
        self.n_rounds, self.layers, self.cost = self.path.n_rounds, self.path.layers, self.path.cost
        self.branch = _Branch(cfg, self.path, cache)
        self.records: list[RoundResult] = []
        self.path_rounds = {"trained": 0, "reused": 0}

    @property
    def model(self):
        return self.branch.model

    @property
    def masks(self) -> pruning.Masks:
        return self.branch.masks

    def events(self) -> Generator[Event, TrainResult | None, TicketResult]:
        states = self.callbacks if self.callbacks.wants("on_state") else None
        path_events = self.path.events(levels=True, stop_at=self.n_rounds)
        path_iterations: dict[int, int] = {}
        reply = None
        while True:
            try:
                event = path_events.send(reply)
            except StopIteration:
                break
            reply = None
            if isinstance(event, RoundJob):  # the ticket's own rounds, trained for their masks
                reply = yield event
            elif isinstance(event, RoundResult):
                path_iterations[event.round] = event.iterations
                self.path_rounds["reused" if event.reused else "trained"] += 1
                if event.round == 0:  # the dense network is the same for the ticket and its controls
                    rec = dataclasses.replace(event)
                    if states is not None:
                        states.on_state(self._dense_state(rec))
                    self.records.append(rec)
                    yield rec
            else:
                rec = yield from self.branch.level(event, states)
                rec.path_iterations = path_iterations.get(event.round - 1, 0) if event.round >= 2 else 0
                self.records.append(rec)
                yield rec
        return self.result()

    def _dense_state(self, rec: RoundResult) -> RoundState:
        dense = self.path._stored(0) if rec.reused else {"theta0": self.path.theta0,
                                                         "state": self.path.model.state_dict()}
        return RoundState(self.cost.filled(rec), pruning.full_masks(self.path.model, self.layers), dense["theta0"],
                          dense["state"], self.path.training_info(self.path.job(0)))

    def run(self, callbacks: Callback | list[Callback] | None = None) -> TicketResult:
        """Run the search to the end, one job at a time (drivers.drive); `callbacks` see the training too."""
        return drive(self, callbacks)

    def result(self, stopped: str | None = None) -> TicketResult:
        return TicketResult(self.cfg.to_dict(), list(self.records), str(self.device), stopped, self.kind,
                            dict(self.path_rounds))


class TicketWithControls:
    """A ticket search whose every level also trains each of `controls` on the ticket's own masks.

    Events: the ticket's rounds (`control == ""`) and, at each level r >= 1, each
    control's round r (`control` = its name) before the ticket's round r. A
    control's round 0 is the ticket's dense round. The ticket's numbers are those
    of the ticket searched alone, bit for bit; each control's are those of its
    `ControlSearch` when the ticket is its path.
    """

    kind = "ticket"

    def __init__(self, cfg: TicketConfig, controls: Mapping[str, TicketConfig], data: Dataset | None = None,
                 cache: RoundCache | None = None, callbacks: Callback | list[Callback] | None = None):
        self.ticket = TicketSearch(cfg, data, cache)
        self.cfg, self.cache = cfg, cache
        self.callbacks = Callbacks(callbacks)
        self.data, self.device, self.sched = self.ticket.data, self.ticket.device, self.ticket.sched
        self.n_rounds, self.layers, self.cost = self.ticket.n_rounds, self.ticket.layers, self.ticket.cost
        self.branches = {name: _Branch(c, self.ticket, cache, name) for name, c in controls.items()}
        self.records: list[RoundResult] = []

    @property
    def model(self):
        return self.ticket.model

    @property
    def masks(self) -> pruning.Masks:
        return self.ticket.masks

    def events(self) -> Generator[Event, TrainResult | None, TicketResult]:
        self.ticket.callbacks = self.callbacks  # (its own rounds' states go to the same watchers)
        states = self.callbacks if self.callbacks.wants("on_state") else None
        events = self.ticket.events(levels=True)
        iterations: dict[int, int] = {}
        reply = None
        while True:
            try:
                event = events.send(reply)
            except StopIteration:
                break
            reply = None
            if isinstance(event, RoundJob):
                reply = yield event
            elif isinstance(event, RoundResult):
                iterations[event.round] = event.iterations
                self.records.append(event)
                yield event
            else:
                for branch in self.branches.values():
                    rec = yield from branch.level(event, states)
                    rec.path_iterations = iterations.get(event.round - 1, 0) if event.round >= 2 else 0
                    yield rec
        return self.result()

    def run(self, callbacks: Callback | list[Callback] | None = None) -> TicketResult:
        """Run the search to the end, one job at a time (drivers.drive); `callbacks` see the training too."""
        return drive(self, callbacks)

    def result(self, stopped: str | None = None) -> TicketResult:
        return TicketResult(self.cfg.to_dict(), list(self.records), str(self.device), stopped, self.kind)
