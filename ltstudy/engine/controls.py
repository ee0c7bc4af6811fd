"""The paper's controls, evaluated on the winning ticket's masks.

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
ticket's. The ticket's own IMP path (the strategies' `path`: magnitude masks,
rewinding for random re-init) comes from the cache where it is stored, and is
trained and stored otherwise, so a study that holds a ticket trial and its
controls trains that path once. Each level r branches off the path (like
open_lth's branches): its own seed, its own training; level 0 is the path's
dense round itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator

import torch

from . import pruning
from .cache import RoundCache
from .config import TicketConfig
from .data import Dataset
from .drivers import drive
from .hashing import digest
from .models import build_model
from .registry import MASKS, REINITS
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


class ControlSearch:
    kind = "control"

    def __init__(self, cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None,
                 callbacks: Callback | list[Callback] | None = None):
        self.cfg = cfg
        self.cache = cache
        self.callbacks = Callbacks(callbacks)
        self.reinit, self.mask_rule = REINITS.load(cfg.prune.reinit)(), MASKS.load(cfg.prune.mask)()
        self.path = TicketSearch(path_config(cfg), data, cache)
        self.data, self.device, self.sched = self.path.data, self.path.device, self.path.sched
        self.n_rounds, self.layers = self.path.n_rounds, self.path.layers
        self.model = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes,
                                 cfg.model.dropout).to(self.device)
        self.masks: pruning.Masks = {}
        self.records: list[RoundResult] = []
        self.path_rounds = {"trained": 0, "reused": 0}

    def level_key(self, path_key: str) -> str:
        return digest("control", path_key, self.cfg.prune.reinit, self.cfg.prune.mask, self.cfg.seed,
                      *(c for c in (REINITS.get(self.cfg.prune.reinit).code(), MASKS.get(self.cfg.prune.mask).code())
                        if c))

    # ------------------------------------------------------------------ one level

    def branch(self, level: Level) -> RoundJob:
        """Level r's start: the level's mask (the ticket's, or a random one) and the re-init strategy's start."""
        r, seed = level.round, self.cfg.seed
        self.masks = self.mask_rule.for_level(level.masks(), seed, r)
        self.reinit.reset(self.model, Start(r, seed, self.path.ensure_theta_k, level.trained))
        pruning.apply_masks(self.model, self.masks)
        return RoundJob(r, self.model, self.masks, self.cfg.train, self.sched, seed, derived_seed(seed, DROPOUT, r),
                        self.reinit.start(self.sched), self.sched.iterations,
                        constant_lr=self.reinit.constant_lr(self.cfg.train, self.sched), label=f"control round {r}")

    # ------------------------------------------------------------------ all levels

    def events(self) -> Generator[Event, TrainResult | None, TicketResult]:
        self._states = self.callbacks.wants("on_state")
        path_events = self.path.events(levels_up_to=self.n_rounds)
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
                    if self._states:
                        dense = self.path._stored(0) if event.reused else {"theta0": self.path.theta0,
                                                                             "state": self.path.model.state_dict()}
                        self.callbacks.on_state(RoundState(rec.to_dict(), pruning.full_masks(self.path.model,
                                                                                              self.layers),
                                                           dense["theta0"], dense["state"],
                                                           self.path.training_info(self.path.job(0))))
                    self.records.append(rec)
                    yield rec
            else:
                rec = yield from self._level(event)
                rec.path_iterations = path_iterations.get(event.round - 1, 0) if event.round >= 2 else 0
                self.records.append(rec)
                yield rec
        return self.result()

    def _level(self, level: Level) -> Generator[Event, TrainResult | None, RoundResult]:
        key = self.level_key(level.key) if self.cache is not None and level.key else None
        stored = self.cache.load(key) if key is not None else None
        if stored is not None:
            self.masks = {n: m.to(self.device, torch.float32) for n, m in stored["masks"].items()}
            self.model.load_state_dict(stored["state"])
            rec = RoundResult.from_dict(stored["record"], reused=True, computed_iterations=0)
            if self._states:
                self.callbacks.on_state(RoundState(rec.to_dict(), self.masks, stored["start"], stored["state"],
                                                   stored["training"]))
            return rec
        t0 = time.perf_counter()
        job = self.branch(level)
        start = clone_state(self.model)
        res = yield job
        pruning.check_masks_hold(self.model, self.masks)
        rec = record(level.round, self.masks, res)
        rec.wall_seconds = round(time.perf_counter() - t0, 4)
        training = self.path.training_info(job)
        if key is not None:
            self.cache.save(key, {"state": cpu(self.model.state_dict()), "start": cpu(start),
                                  "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
                                  "record": rec.to_dict(), "training": training})
        if self._states:
            self.callbacks.on_state(RoundState(rec.to_dict(), self.masks, start, self.model.state_dict(), training))
        return rec

    def run(self, callbacks: Callback | list[Callback] | None = None) -> TicketResult:
        """Run the search to the end, one job at a time (drivers.drive); `callbacks` see the training too."""
        return drive(self, callbacks)

    def result(self, stopped: str | None = None) -> TicketResult:
        return TicketResult(self.cfg.to_dict(), list(self.records), str(self.device), stopped, self.kind,
                            dict(self.path_rounds))
