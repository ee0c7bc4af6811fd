"""Ticket search: iterative magnitude pruning (IMP) with rewinding, as a generator of events (search.py).

After each pruning step the survivors are reset by the config's re-init
strategy (reinit/: rewind to θ_k, fine-tune, rewind the learning rate) and
retrained; masks come from the mask rule (masks/: magnitude) under the scope
(scopes/: layer-wise or global). Each round starts with a fresh optimiser. The
data order depends on the seed and the iteration only, so a rewound round
replays the batches from k.

With `controls` (registered branches: the paper's controls, pruning at
initialisation), the search trains each of them at every level r, from its
own `Level` (m_r, θ0, θ_k, round r-1's weights), before its own round r: one
loop, the branches' rounds among its events (`RoundResult.control`). The
ticket's numbers are those of the ticket searched alone, bit for bit.
`drivers.py` runs it, one job at a time or packed with other searches.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from . import connectivity, level_barrier, pruning
from .cache import CACHE_VERSION, RoundCache
from .compression import CostModel
from .config import TicketConfig
from .data import Dataset, load_dataset
from .device import resolve_device
from .errors import ConfigError, SettingWarning
from .hashing import digest, engine_digest, identity
from .linear_paths import StartKind
from .models import build_model, signature
from .registry import CONTROLS, MASKS, MODELS, REINITS, SCOPES, check_pair
from .reinit.base import Start
from .round_protocol import clone_state, cpu, round_record
from .rounds import Level, Masks, RoundJob, RoundResult, RoundState, State, TicketResult, TrainResult
from .search import EventStream, Search
from .seeds import DROPOUT, derived_seed
from .sparse import sparse_supported
from .training import train

if TYPE_CHECKING:
    from .branches.base import Branch
    from .callbacks import Callback


class TicketSearch(Search):
    """The IMP path of one config (the ticket), and its `controls` at every level; tests may step it by hand.

    `last_round`: train only the rounds up to this one (a stability analysis of early rounds).
    """

    kind = "ticket"
    reports_ticket: ClassVar[bool] = True  # False (a control alone): the ticket's pruned rounds are only its path

    def __init__(self, cfg: TicketConfig, data: Dataset | None = None, cache: RoundCache | None = None,
                 controls: Sequence[str] = (), last_round: int | None = None):
        if cfg.split_control()[0] is not None:
            raise ValueError("a control config runs as controls.ControlSearch (use searches.ticket_search())")
        self.cfg = cfg
        self.cache = cache
        p = cfg.prune
        self.reinit, self.mask_rule = REINITS.load(p.reinit)(), MASKS.load(p.mask)()
        for name in controls:
            cfg.check_control(name)
        self.device = resolve_device(cfg.device)
        check_pair(cfg.model.name, cfg.data.name)
        self.data = data if data is not None else load_dataset(cfg.data, self.device)
        self.sched = cfg.resolve_schedule(len(self.data.train))
        self.seeds = cfg.resolved_seeds
        torch.manual_seed(self.seeds.init)
        self.model = build_model(cfg.model.name, self.data.input_shape, self.data.num_classes,
                                 cfg.model.dropout).to(self.device)
        self.layers = pruning.prunable_layers(self.model)
        self.cost = CostModel.of(self.model, self.data.input_shape)
        self.rates = pruning.layer_rates(self.layers, p)
        self.shared = SCOPES.load(p.scope)().shared(self.layers, p)
        self.n_rounds = pruning.plan_rounds(self.layers, self.rates, self.shared, p)
        if p.one_shot:
            self.rates = pruning.one_shot_rates(self.layers, self.rates, self.shared, p.target_density)
        pruning.check_rounds(self.layers, self.rates, self.shared, self.n_rounds)
        if cfg.train.kernels == "sparse" and not sparse_supported(self.model, cfg.train, self.device):
            warnings.warn("train.kernels = sparse: the sparse kernels cover fully connected networks "
                          f"(Linear, ReLU, Dropout) on the CPU; {cfg.model.name} on {self.device.type} trains dense",
                          SettingWarning, stacklevel=2)
        st = cfg.stability
        if any(r > self.n_rounds for r in st.rounds) or any(k >= self.sched.iterations for k in st.dense_ks):
            raise ConfigError(f"stability.rounds must be within the search's rounds 1..{self.n_rounds} and "
                              f"stability.dense_ks below the round's {self.sched.iterations} iterations; got "
                              f"{st.rounds} and {st.dense_ks}")
        if last_round is not None:
            self.n_rounds = min(self.n_rounds, last_round)
        self.theta0 = clone_state(self.model)
        self.theta_k: State | None = None
        self.masks = pruning.full_masks(self.model, self.layers)
        self.records: list[RoundResult] = []  # the ticket's own rounds
        self.reported: list[RoundResult] = []  # every round this search yields (its branches' too)
        self.path_rounds = {"trained": 0, "reused": 0}  # the ticket's rounds, trained here or loaded
        self._replayed = 0  # iterations re-run to rebuild θ_k, charged to the next trained round
        self._scratch: torch.nn.Module | None = None  # a stability measurement's second copy, a level path's points
        self._level_end: tuple[State, Masks] | None = None  # [stability] level_points: round r-1's trained weights
        self._digests: dict[str, str | None] = {}  # content digests: "dense", "theta_k", and round numbers
        self._make_keys()
        self.branches: dict[str, Branch] = {}
        for name in controls:
            entry = CONTROLS.get(name)
            self.branches[name] = entry.load()(self, name, **entry.meta)
        if identity(cfg.sparse_training) and not any(b.settings() for b in self.branches.values()):
            warnings.warn("[sparse_training] is set, but no control here trains by it (static, set, rigl): it "
                          "changes nothing", SettingWarning, stacklevel=2)

    # ------------------------------------------------------------------ cache keys

    def _make_keys(self) -> None:
        """Content keys: everything that determines an entry, and nothing that doesn't.

        The config enters by its identity (hashing.identity: settings at their defaults, the data's folder and
        the device setting are no part of it). The dense round depends on the engine's code, the code of a
        user's model and its parameter shapes, the data read, the device's type (its kernels give other bits),
        the data, model and training settings and the seeds it draws from (not on k, the pruning settings or
        the number of rounds); θ_k adds k and the dense entry's digest; round r adds every pruning setting
        except how many rounds follow it, the code of a user's strategies, and the digests of round r-1's
        entry and of θ_k.
        """
        c = self.cfg
        ident = identity(c)
        s = self.seeds  # (the streams it draws from, however the config says them; a ticket's masks are not random)
        dense = {**{k: ident[k] for k in ("data", "model", "train") if k in ident},
                 "seeds": [s.init, s.data_order, s.dropout]}
        self.dense_key = digest("dense", CACHE_VERSION, engine_digest(), torch.__version__.split("+")[0],
                                self.device.type, self.data.digest, dense, MODELS.get(c.model.name).code(),
                                signature(self.model))
        prune = identity(dataclasses.replace(c.prune, rewind_iter=self.sched.rewind_iter))
        prune.pop("rounds", None)  # (round r is the same however many rounds follow it)
        if not c.prune.one_shot:
            prune.pop("target_density", None)  # (which then only says how many rounds follow)
        codes = {r.kind: code for r, n in ((REINITS, c.prune.reinit), (MASKS, c.prune.mask), (SCOPES, c.prune.scope))
                 if (code := r.get(n).code())}
        self.rounds_key = digest("rounds", self.dense_key, prune, codes)

    @property
    def theta_k_key(self) -> str:
        return digest("theta_k", self._digests.get("dense"), self.sched.rewind_iter)

    def _uses_theta_k(self) -> bool:
        return self.reinit.rewinds and self.sched.rewind_iter > 0

    def round_key(self, round_: int) -> str:
        """Round 0 is the dense entry; round r is keyed by its parent's (round r-1's) content digest."""
        if round_ == 0:
            return self.dense_key
        parent = self._digests.get("dense" if round_ == 1 else str(round_ - 1))
        theta_k = self._digests.get("theta_k") if self._uses_theta_k() else None
        return digest(self.rounds_key, round_, parent, theta_k)

    # ------------------------------------------------------------------ one round (steps 3, 4 and 2 of IMP)

    def prune_masks(self, round_: int) -> None:
        """Step 3: new masks from the trained weights."""
        self.masks = self.mask_rule.prune(self.model, self.masks, self.rates, self.shared)

    def reset(self, round_: int) -> None:
        """Step 4: the survivors' new start, by the re-init strategy (the model holds round r-1's weights)."""
        self.reinit.reset(self.model, Start(round_, self.seeds.init, self.ensure_theta_k, None))
        pruning.apply_masks(self.model, self.masks)

    def prune_and_reset(self, round_: int) -> None:
        self.prune_masks(round_)
        self.reset(round_)

    def job(self, round_: int, label: str = "round") -> RoundJob:
        k = self.sched.rewind_iter
        start = 0 if round_ == 0 else self.reinit.start(self.sched)
        constant_lr = self.reinit.constant_lr(self.cfg.train, self.sched) if round_ > 0 else None
        return RoundJob(round_, self.model, self.masks, self.cfg.train, self.sched, self.seeds.data_order,
                        derived_seed(self.seeds.dropout, DROPOUT, round_), start, self.sched.iterations,
                        capture_at=k if round_ == 0 else None, constant_lr=constant_lr, label=f"{label} {round_}")

    def finish(self, round_: int, res: TrainResult) -> RoundResult:
        if round_ == 0:
            self.theta_k = res.snapshot
        pruning.check_masks_hold(self.model, self.masks)
        rec = round_record(round_, self.masks, res)
        rec.computed_iterations += self._replayed
        self._replayed = 0
        return rec

    def train_round(self, round_: int, callbacks: Callback | None = None) -> TrainResult:
        """Train round r on the current state (tests step the search by hand with this)."""
        res = train(self.job(round_), self.data, callbacks)
        if round_ == 0:
            self.theta_k = res.snapshot
        pruning.check_masks_hold(self.model, self.masks)
        return res

    # ------------------------------------------------------------------ all rounds

    def _events(self, states: bool) -> EventStream:
        """Rounds 0..R (the longest stored prefix loaded instead of trained) and, at each level r >= 1, every
        branch's round r before the ticket's; with `states`, each round's RoundState before its RoundResult."""
        restored = self.restore() if self.cache is not None else []
        iterations: dict[int, int] = {}  # the ticket's iterations per round (a branch's path_iterations)
        for r in range(self.n_rounds + 1):
            stored = r < len(restored)
            t0 = time.perf_counter()
            if r > 0:
                if not stored:
                    self.prune_masks(r)
                paused = time.perf_counter()  # (the branches train while the ticket waits here)
                for branch in self.branches.values():
                    rec = yield from branch.level(self._level(r, stored), states)
                    rec.path_iterations = iterations.get(r - 1, 0) if r >= 2 and branch.charges_path else 0
                    self.reported.append(rec)
                    yield rec
                t0 += time.perf_counter() - paused
                if not self.reports_ticket and r == self.n_rounds:
                    break  # (a control alone: the ticket's last round masks nothing it trains)
            start, job = None, None
            if stored:
                rec = restored[r]
            else:
                if r > 0:
                    self.reset(r)
                job = self.job(r, "ticket round" if self.branches or not self.reports_ticket else "round")
                if self.cache is not None or states or self.cfg.stability.points:
                    start = clone_state(self.model)
                res = yield job
                rec = self.finish(r, res)
                rec.wall_seconds = round(time.perf_counter() - t0, 4)
                if self.cache is not None:
                    self.checkpoint(r, [*self.records, rec], start)
            iterations[r] = rec.iterations
            self.path_rounds["reused" if stored else "trained"] += 1
            if self._measures(r):
                yield from self._measure_stability(r, rec, None if stored else (start, self.masks))
            if r == 0 and self.cfg.stability.points:
                yield from self._measure_dense(rec, self._stored(0)["state"] if stored else clone_state(self.model))
            if self.cfg.stability.level_points and self.reports_ticket:
                self._measure_level(r, rec, stored)
            self.records.append(rec)
            if self.reports_ticket or r == 0:
                if states:
                    yield self._state(r, rec, start, job)
                self.reported.append(rec)
                yield rec

    def _level(self, r: int, stored: bool) -> Level:
        """Level r for the branches: m_r and round r-1's weights, from the model (trained here) or the cache."""
        if stored:
            masks, trained = (lambda: self._stored(r)["masks"]), (lambda: self._stored(r - 1)["state"])
        else:
            masks, trained = (lambda: self.masks), (lambda: self.model.state_dict())
        return Level(r, masks, trained, self.theta0, self.ensure_theta_k, self.seeds,
                     self.round_key(r) if self.cache is not None else None)

    def _state(self, r: int, rec: RoundResult, start: State | None, job: RoundJob | None) -> RoundState:
        """Round r's RoundState: the model's (trained here: `job`), or its cache entry's."""
        if job is not None:
            return RoundState(rec, self.masks, start, self.model.state_dict(), self.training_info(job))
        entry = self._stored(r)
        masks = entry["masks"] if r > 0 else pruning.full_masks(self.model, self.layers)
        return RoundState(rec, masks, entry["theta0"] if r == 0 else entry["start"], entry["state"],
                          self.training_info(self.job(r)))

    def _measures(self, r: int) -> bool:
        s = self.cfg.stability
        return r > 0 and bool(s.points) and (not s.rounds or r in s.rounds)

    def _measure_stability(self, r: int, rec: RoundResult, trained: tuple[State, Masks] | None
                           ) -> Generator[RoundJob, TrainResult, None]:
        """`[stability] points`: the round's instability, copy A being the round itself (connectivity.py)."""
        if trained is None:  # (restored: the entry has the round's start and end)
            entry = self._stored(r)
            start, masks, end = entry["start"], entry["masks"], entry["state"]
        else:
            (start, masks), end = trained, clone_state(self.model)
        copies = connectivity.CopiesStart(StartKind.TICKET, r, start, masks, self.job(r).dropout_seed, end)
        result = yield from self.copies(copies, self.reinit.start(self.sched),
                                        self.round_key(r) if self.cache is not None else None)
        rec.metrics.update(val_instability=result.val_instability, test_instability=result.test_instability)
        rec.stability_paths.append(result.to_dict())
        rec.computed_iterations += result.trained_iterations

    def _measure_dense(self, rec: RoundResult, trained: State) -> Generator[RoundJob, TrainResult, None]:
        """`[stability] dense_ks`: the dense network from each θ_k; for k = 0 copy A is round 0 (`trained`)."""
        for k in self.cfg.stability.dense_ks:
            result = yield from self.dense_copies(k, trained if k == 0 else None)
            if k == 0:
                rec.metrics.update(val_instability=result.val_instability, test_instability=result.test_instability)
            rec.stability_paths.append(result.to_dict())
            rec.computed_iterations += result.trained_iterations + self._replayed
            self._replayed = 0

    def _measure_level(self, r: int, rec: RoundResult, stored: bool) -> None:
        """`[stability] level_points`: the path from round r-1's trained weights to round r's (level_barrier.py),
        each from the model as trained here or from the round's cache entry."""
        if stored:
            entry = self._stored(r)
            masks = ({n: entry["masks"][n].to(self.device, m.dtype) for n, m in self.masks.items()} if r > 0
                     else pruning.full_masks(self.model, self.layers))
            end = ({n: t.to(self.device) for n, t in entry["state"].items()}, masks)
        else:
            end = (clone_state(self.model), dict(self.masks))
        if r > 0:
            assert self._level_end is not None
            path = level_barrier.level_path(self.scratch(), self._level_end, end, r, self.data, self.seeds.data_order,
                                            self.cfg.stability.level_points)
            rec.metrics.update(path.metrics())
        self._level_end = end

    def dense_copies(self, k: int, trained: State | None = None
                     ) -> Generator[RoundJob, TrainResult, connectivity.Stability]:
        """Two copies of the dense network from θ_k (copy A given as `trained` when round 0 is it)."""
        theta = self.theta_at(k)
        start = connectivity.CopiesStart(StartKind.DENSE, 0, theta, pruning.full_masks(self.model, self.layers),
                                         derived_seed(self.seeds.dropout, DROPOUT, 0), trained)
        return (yield from self.copies(start, k, digest("stability dense", self.dense_key, k)))

    def copies(self, start: connectivity.CopiesStart, k: int, key: str | None
               ) -> Generator[RoundJob, TrainResult, connectivity.Stability]:
        """connectivity.measure on a scratch network, with this search's copy seeds and training cache."""
        s = self.cfg.stability
        seeds = connectivity.copy_seeds(self.seeds.data_order, None if s.copy_seed == -1 else s.copy_seed)
        return (yield from connectivity.measure(self.scratch(), start, self.cfg.train, self.sched, k, self.data, seeds,
                                                s.points or connectivity.POINTS, self.cache, key))

    def scratch(self) -> torch.nn.Module:
        """A second network of the search's architecture, for measurements beside its rounds (built once)."""
        if self._scratch is None:
            self._scratch = build_model(self.cfg.model.name, self.data.input_shape, self.data.num_classes,
                                        self.cfg.model.dropout).to(self.device)
        return self._scratch

    def training_info(self, job: RoundJob) -> dict[str, Any]:
        """How a round was trained, for retraining a saved ticket exactly."""
        return {"start": job.start, "end": job.end, "data_seed": job.data_seed, "dropout_seed": job.dropout_seed,
                "constant_lr": job.constant_lr, "input_shape": list(self.data.input_shape),
                "num_classes": self.data.num_classes,
                **({"input": {"mean": list(self.data.input_mean), "std": list(self.data.input_std)}}
                   if self.data.input_mean else {})}

    def result(self, stopped: str | None = None) -> TicketResult:
        return TicketResult(self.cfg.to_dict(), list(self.records), str(self.device), stopped, self.kind)

    # ------------------------------------------------------------------ θ_k

    def ensure_theta_k(self) -> State:
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
        self.theta_k = self.replay(k)
        self._save_theta_k()
        return self.theta_k

    def theta_at(self, k: int) -> State:
        """The dense network at iteration k of round 0: θ0, the search's θ_k, stored (any k), or replayed."""
        if k == 0:
            return self.theta0
        if k == self.sched.rewind_iter:
            return self.ensure_theta_k()
        key = digest("theta_k", self._digests.get("dense"), k)  # (theta_k_key's form: shared with a search at k)
        stored = self.cache.load(key) if self.cache is not None and self._digests.get("dense") else None
        if stored is not None:
            return {n: t.to(self.device) for n, t in stored["theta_k"].items()}
        theta = self.replay(k)
        if self.cache is not None and self._digests.get("dense"):
            self.cache.save(key, {"theta_k": cpu(theta)})
        return theta

    def replay(self, k: int) -> State:
        """The dense network's state after k iterations of round 0, trained again from θ0 (charged to the search)."""
        replay = build_model(self.cfg.model.name, self.data.input_shape, self.data.num_classes,
                             self.cfg.model.dropout).to(self.device)
        replay.load_state_dict(self.theta0)
        job = RoundJob(0, replay, pruning.full_masks(replay, self.layers), self.cfg.train, self.sched,
                       self.seeds.data_order, derived_seed(self.seeds.dropout, DROPOUT, 0), 0, k, capture_at=k,
                       label="θ_k replay", evaluate=False)
        self._replayed += k
        return train(job, self.data).snapshot

    def _save_theta_k(self) -> None:
        if self.cache is not None and self._uses_theta_k() and self.theta_k is not None and self._digests.get("dense"):
            self._digests["theta_k"] = self.cache.save(self.theta_k_key, {"theta_k": cpu(self.theta_k)})

    # ------------------------------------------------------------------ cache and checkpoints

    def checkpoint(self, round_: int, records: list[RoundResult], start: State | None = None) -> None:
        """Store round `round_` atomically: the weights it started from and trained to, masks, the records so far."""
        assert self.cache is not None
        state = cpu(self.model.state_dict())
        if round_ == 0:
            self._digests["dense"] = self.cache.save(self.dense_key, {
                "theta0": cpu(self.theta0), "state": state, "records": [r.to_dict() for r in records]})
            self._save_theta_k()
        else:
            key = self.round_key(round_)
            self._digests[str(round_)] = self.cache.save(key, {
                "state": state, "masks": {n: m.bool().cpu() for n, m in self.masks.items()},
                "start": cpu(start) if start is not None else None, "records": [r.to_dict() for r in records]})

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
        # (a stored record's stability is whatever the search that stored it measured: this one measures its own)
        # (a stored record's metrics and stability are recomputed: this search measures its own)
        return [RoundResult.from_dict(d, reused=True, computed_iterations=0, metrics={}, stability_paths=[])
                for d in entry["records"][:last + 1]]


def _same_state(a: State, b: State) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].detach().cpu()) for k in a)
