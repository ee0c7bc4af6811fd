"""The paper's controls, evaluated on the winning ticket's masks.

Frankle & Carbin compare each winning ticket with two controls that change one
thing about it, level by level of the same IMP run:

- random re-initialisation (`reinit = "random"`): "we randomly reinitialize
  each winning ticket": the ticket's mask m_r at level r, with a fresh θ'0
  drawn from the same initialisation distribution, trained from iteration 0;
- random pruning (`mask = "random"`): a random mask with m_r's per-layer
  densities, started like the ticket (θ_k for rewinding, the trained weights
  for fine-tuning).

Both together (`reinit = "random"` and `mask = "random"`) is a random sparse
network with the ticket's layer densities. The ticket's own IMP path (the
same settings with magnitude masks; rewinding for `reinit = "random"`) comes
from the cache where it is stored, and is trained and stored otherwise, so a
study that holds a ticket trial and its controls trains that path once. Each
level r branches off the path (like open_lth's branches): its own seed, its
own training; level 0 is the path's dense round itself.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator

import torch

from . import pruning
from .cache import RoundCache, content_key
from .config import TicketConfig
from .data import Dataset
from .models import build_model, init_weights
from .ticket import (
    DROPOUT,
    RANDOM_MASK,
    REINIT,
    Event,
    Level,
    ProgressCallback,
    RoundCallback,
    RoundJob,
    RoundResult,
    TicketResult,
    TicketSearch,
    derived_seed,
    drive,
    record,
)
from .training import TrainResult, lr_at


def path_config(cfg: TicketConfig) -> TicketConfig:
    """The ticket whose masks a control uses: the same settings, magnitude masks, rewinding for random re-init."""
    reinit = "rewind" if cfg.prune.reinit == "random" else cfg.prune.reinit
    return cfg.replace({"prune.reinit": reinit, "prune.mask": "magnitude"})


class ControlSearch:
    kind = "control"

    def __init__(self, cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None):
        self.cfg = cfg
        self.cache = cache
        self.path = TicketSearch(path_config(cfg), data, cache)
        self.data, self.device, self.sched = self.path.data, self.path.device, self.path.sched
        self.n_rounds, self.layers = self.path.n_rounds, self.path.layers
        self.model = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes,
                                 cfg.model.dropout).to(self.device)
        self.masks: pruning.Masks = {}
        self.records: list[RoundResult] = []
        self.path_rounds = {"trained": 0, "reused": 0}
        self.on_state = None  # as TicketSearch.on_state

    @property
    def random_reinit(self) -> bool:
        return self.cfg.prune.reinit == "random"

    @property
    def random_mask(self) -> bool:
        return self.cfg.prune.mask == "random"

    def level_key(self, path_key: str) -> str:
        return content_key("control", path_key, self.cfg.prune.reinit, self.cfg.prune.mask, self.cfg.seed)

    # ------------------------------------------------------------------ one level

    def branch(self, level: Level) -> RoundJob:
        """Level r's start: the ticket's (or a random) mask and a fresh θ'0 (or the ticket's start)."""
        r, seed = level.round, self.cfg.seed
        ticket_masks = level.masks()
        self.masks = (pruning.random_masks(ticket_masks, torch.Generator().manual_seed(derived_seed(seed, RANDOM_MASK,
                                                                                                      r)))
                      if self.random_mask else {n: m.clone() for n, m in ticket_masks.items()})
        reinit, k = self.cfg.prune.reinit, self.sched.rewind_iter
        if reinit == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derived_seed(seed, REINIT, r))
                init_weights(self.model)
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
            start = 0
        elif reinit == "rewind":
            self.model.load_state_dict(self.path.ensure_theta_k())
            start = k
        else:  # finetune / lr-rewind: the ticket's trained weights of round r-1, under this level's mask
            self.model.load_state_dict(level.trained())
            start = k
        pruning.apply_masks(self.model, self.masks)
        constant_lr = lr_at(self.sched.iterations - 1, self.cfg.train, self.sched) if reinit == "finetune" else None
        return RoundJob(r, self.model, self.masks, self.cfg.train, self.sched, seed, derived_seed(seed, DROPOUT, r),
                        start, self.sched.iterations, constant_lr=constant_lr, label=f"control round {r}")

    # ------------------------------------------------------------------ all levels

    def events(self) -> Generator[Event, TrainResult | None, TicketResult]:
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
                    if self.on_state is not None:
                        dense = self.path._stored(0) if event.reused else {"theta0": self.path.theta0,
                                                                             "state": self.path.model.state_dict()}
                        self.on_state(rec.to_dict(), pruning.full_masks(self.path.model, self.layers), dense["theta0"],
                                      dense["state"], self.path.training_info(self.path.job(0)))
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
            rec = RoundResult(**{**stored["record"], "reused": True, "computed_iterations": 0})
            if self.on_state is not None:
                self.on_state(rec.to_dict(), self.masks, stored["start"], stored["state"], stored["training"])
            return rec
        t0 = time.perf_counter()
        job = self.branch(level)
        start = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        res = yield job
        pruning.check_masks_hold(self.model, self.masks)
        rec = record(level.round, self.masks, res)
        rec.wall_seconds = round(time.perf_counter() - t0, 4)
        training = self.path.training_info(job)
        if key is not None:
            self.cache.save(key, {"state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                                  "start": {k: v.cpu() for k, v in start.items()},
                                  "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
                                  "record": rec.to_dict(), "training": training})
        if self.on_state is not None:
            self.on_state(rec.to_dict(), self.masks, start, self.model.state_dict(), training)
        return rec

    def run(self, on_round: RoundCallback | None = None, progress: ProgressCallback | None = None) -> TicketResult:
        return drive(self, on_round, progress)

    def result(self, stopped: str | None = None) -> TicketResult:
        return TicketResult(self.cfg.to_dict(), list(self.records), str(self.device), stopped, self.kind,
                            dict(self.path_rounds))
