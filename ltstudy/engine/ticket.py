"""Ticket search: iterative magnitude pruning with rewinding (the engine).

This module imports neither optuna nor mlflow. The study layer drives it
through `on_round`, called after every finished round; raising `StopSearch`
there ends the search early and keeps the rounds done so far.

Re-init strategies, after each pruning step (k = rewind_iter):
- rewind:    survivors <- θ_k, retrain iterations k..T (k = 0: Frankle & Carbin's ticket).
- random:    survivors <- a fresh draw from the init distribution (new seed per
             round), retrain iterations 0..T: the paper's control.
- finetune:  keep the trained weights, train T-k more iterations at the final learning rate.
- lr-rewind: keep the trained weights, replay the learning-rate schedule from k (Renda et al. 2020).
Each round starts with a fresh optimiser. The data order depends on the seed
and the iteration only, so a rewound round replays the batches from k.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import pruning
from .cache import RoundCache, content_key
from .config import TicketConfig
from .data import Dataset, load_dataset
from .models import build_model, init_weights
from .training import TrainResult, clone_state, lr_at, resolve_device, train


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
    test_accuracy_at_early_stop: float
    train_loss: float
    iterations: int  # training iterations of this round (what the method costs)
    wall_seconds: float
    layer_density: dict[str, float] = field(default_factory=dict)
    reused: bool = False  # loaded from the cache (or a checkpoint) instead of trained here
    computed_iterations: int = 0  # iterations actually trained for it here (0 if reused, + any θ_k replay)

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

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "device": self.device, "stopped": self.stopped,
                "rounds": [r.to_dict() for r in self.rounds]}

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


RoundCallback = Callable[[RoundResult], None]
ProgressCallback = Callable[[int, int, int], None]  # round, iterations done, iterations total


_CACHE_VERSION = 1  # bump when the engine's numbers change for the same settings


def _derived_seed(seed: int, *parts: int) -> int:
    # Distinct, reproducible streams per (purpose, round) from one user seed.
    h = seed
    for p in parts:
        h = (h * 1_000_003 + p + 1) % (2**63 - 1)
    return h


class TicketSearch:
    """The state of one IMP run; `run()` does all rounds, tests may step it by hand."""

    def __init__(self, cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None):
        self.cfg = cfg
        self.cache = cache
        self.device = resolve_device(cfg.device)
        self.data = data if data is not None else load_dataset(cfg.data, self.device)
        self.sched = cfg.resolve_schedule(len(self.data.train))
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes,
                                 cfg.model.dropout).to(self.device)
        self.layers = pruning.prunable_layers(self.model)
        self.rates = pruning.layer_rates(self.layers, cfg.prune)
        self.shared = pruning.globally_ranked(self.layers, self.rates, cfg.prune)
        self.n_rounds = pruning.plan_rounds(self.layers, self.rates, cfg.prune)
        if cfg.prune.one_shot:
            rate = pruning.one_shot_rate(self.layers, self.rates, cfg.prune.target_density)
            self.rates = {n: rate if r else 0.0 for n, r in self.rates.items()}
        self.theta0 = clone_state(self.model)
        self.theta_k: dict[str, torch.Tensor] | None = None
        self.masks = pruning.full_masks(self.model, self.layers)
        self.mask_gen = torch.Generator().manual_seed(_derived_seed(cfg.seed, 1))
        self._replayed = 0  # iterations re-run to rebuild θ_k, charged to the next trained round
        self._make_keys()

    # ------------------------------------------------------------------ cache keys

    def _make_keys(self) -> None:
        """Content keys: everything that determines an entry, and nothing that doesn't.

        The dense round depends on data, model, training settings and seed (not
        on k, the pruning settings or the number of rounds); θ_k adds k; round r
        adds every pruning setting except how many rounds follow it.
        """
        c = self.cfg
        data = {k: v for k, v in dataclasses.asdict(c.data).items() if k not in ("root", "download")}
        self.dense_key = content_key("dense", _CACHE_VERSION, torch.__version__.split("+")[0], self.device.type,
                                     data, dataclasses.asdict(c.model), dataclasses.asdict(c.train), c.seed)
        self.theta_k_key = content_key("theta_k", self.dense_key, self.sched.rewind_iter)
        prune = dataclasses.asdict(c.prune)
        prune.pop("rounds")
        if not prune["one_shot"]:
            prune.pop("target_density")
        prune["rewind_iter"] = None if c.prune.reinit == "random" else self.sched.rewind_iter
        self.rounds_key = content_key("rounds", self.dense_key, prune)

    def round_key(self, round_: int) -> str:
        return self.dense_key if round_ == 0 else content_key(self.rounds_key, round_)

    # ------------------------------------------------------------------ one round

    def prune_and_reset(self, round_: int) -> None:
        """Step 3 and 4 of IMP: new masks from the trained weights, then the re-init strategy."""
        self.masks = pruning.prune(self.model, self.masks, self.rates, self.cfg.prune, self.shared, self.mask_gen)
        reinit = self.cfg.prune.reinit
        if reinit == "rewind":
            assert self.theta_k is not None, "round 0 must run before pruning"
            self.model.load_state_dict(self.theta_k)
        elif reinit == "random":
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_derived_seed(self.cfg.seed, 2, round_))
                init_weights(self.model)
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
        pruning.apply_masks(self.model, self.masks)

    def train_round(self, round_: int, progress: ProgressCallback | None = None) -> TrainResult:
        reinit, k = self.cfg.prune.reinit, self.sched.rewind_iter
        start = 0 if round_ == 0 or reinit == "random" else k
        constant_lr = lr_at(self.sched.iterations - 1, self.cfg.train, self.sched) if (
            round_ > 0 and reinit == "finetune") else None
        total = self.sched.iterations - start
        on_eval = (lambda done, _ev: progress(round_, done - start, total)) if progress else None
        torch.manual_seed(_derived_seed(self.cfg.seed, 3, round_))  # dropout
        result = train(self.model, self.data, self.masks, self.cfg.train, self.sched, seed=self.cfg.seed,
                       start=start, capture_at=k if round_ == 0 else None, constant_lr=constant_lr, on_eval=on_eval)
        if round_ == 0:
            self.theta_k = result.snapshot
        pruning.check_masks_hold(self.model, self.masks)
        return result

    def record(self, round_: int, res: TrainResult) -> RoundResult:
        return RoundResult(
            round=round_, density=pruning.density(self.masks), weights_remaining=pruning.remaining(self.masks),
            val_loss=res.val_loss, val_accuracy=res.val_accuracy, early_stop_iteration=res.early_stop_iteration,
            test_accuracy=res.test_accuracy, test_accuracy_at_early_stop=res.test_accuracy_at_early_stop,
            train_loss=res.train_loss, iterations=res.iterations, wall_seconds=round(res.wall_seconds, 4),
            computed_iterations=res.iterations,
            layer_density=pruning.layer_density(self.masks))

    # ------------------------------------------------------------------ all rounds

    def run(self, on_round: RoundCallback | None = None, progress: ProgressCallback | None = None) -> TicketResult:
        """All rounds; with a cache, the longest stored prefix is loaded instead of trained."""
        restored = self.restore() if self.cache is not None else []
        results: list[RoundResult] = []
        for r in range(self.n_rounds + 1):
            if r < len(restored):
                rec = restored[r]
            else:
                t0 = time.perf_counter()
                if r > 0:
                    self.prune_and_reset(r)
                rec = self.record(r, self.train_round(r, progress))
                rec.wall_seconds = round(time.perf_counter() - t0, 4)
                rec.computed_iterations += self._replayed
                self._replayed = 0
                if self.cache is not None:
                    self.checkpoint(r, [*results, rec])
            results.append(rec)
            if on_round is not None:
                try:
                    on_round(rec)
                except StopSearch as stop:
                    return TicketResult(self.cfg.to_dict(), results, str(self.device), stop.reason)
        return TicketResult(self.cfg.to_dict(), results, str(self.device), None)

    # ------------------------------------------------------------------ cache and checkpoints

    def checkpoint(self, round_: int, records: list[RoundResult]) -> None:
        """Store round `round_` atomically: weights, masks, RNG state and the records so far."""
        assert self.cache is not None
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        if round_ == 0:
            self.cache.save(self.dense_key, {"theta0": _cpu(self.theta0), "state": state,
                                             "records": [r.to_dict() for r in records]})
            if self.theta_k is not None and self.sched.rewind_iter > 0:
                self.cache.save(self.theta_k_key, {"theta_k": _cpu(self.theta_k)})
        else:
            self.cache.save(self.round_key(round_), {
                "state": state, "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
                "mask_gen": self.mask_gen.get_state(), "records": [r.to_dict() for r in records]})

    def restore(self) -> list[RoundResult]:
        """Load the longest stored prefix of rounds; returns its records (marked reused)."""
        assert self.cache is not None
        dense = self.cache.load(self.dense_key)
        if dense is None or not _same_state(dense["theta0"], self.theta0):
            return []  # (a θ0 mismatch would mean a stale entry from other code: ignore it)
        entry, last = dense, 0
        for r in range(self.n_rounds, 0, -1):
            found = self.cache.load(self.round_key(r))
            if found is not None:
                entry, last = found, r
                break
        self.model.load_state_dict(entry["state"])
        if last > 0:
            self.masks = {n: entry["masks"][n].to(self.device, self.masks[n].dtype) for n in self.masks}
            self.mask_gen.set_state(entry["mask_gen"])
        if last < self.n_rounds:
            self._restore_theta_k(dense)
        return [RoundResult(**{**d, "reused": True, "computed_iterations": 0}) for d in entry["records"][:last + 1]]

    def _restore_theta_k(self, dense: dict) -> None:
        """θ_k for the rounds still to train: θ0 when k = 0, else stored, else replayed (k iterations)."""
        k = self.sched.rewind_iter
        if self.cfg.prune.reinit != "rewind":
            return
        if k == 0:
            self.theta_k = self.theta0
            return
        stored = self.cache.load(self.theta_k_key) if self.cache is not None else None
        if stored is not None:
            self.theta_k = {n: t.to(self.device) for n, t in stored["theta_k"].items()}
            return
        # The dense run is stored for another k: replay its first k iterations (same data order, same dropout seed).
        trained, masks = clone_state(self.model), self.masks
        self.model.load_state_dict(self.theta0)
        self.masks = pruning.full_masks(self.model, self.layers)
        torch.manual_seed(_derived_seed(self.cfg.seed, 3, 0))
        result = train(self.model, self.data, self.masks, self.cfg.train, self.sched, seed=self.cfg.seed,
                       capture_at=k, end=k)
        self.theta_k, self.masks = result.snapshot, masks
        self._replayed = k
        self.model.load_state_dict(trained)
        if self.cache is not None:
            self.cache.save(self.theta_k_key, {"theta_k": _cpu(self.theta_k)})


def run_ticket_search(cfg: TicketConfig, on_round: RoundCallback | None = None,
                      progress: ProgressCallback | None = None, data: Dataset | None = None,
                      cache: RoundCache | None = None) -> TicketResult:
    """Run IMP for `cfg`: round 0 dense, then `rounds` prune-reset-retrain rounds."""
    return TicketSearch(cfg, data, cache).run(on_round, progress)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].detach().cpu()) for k in a)
