"""The Optuna objective: one trial = one ticket search per replicate seed, logged to a child MLflow run."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from ..engine.cache import RoundCache
from ..engine.ticket import RoundResult, TicketSearch
from .attrs import LINEAGE_ATTR, NUMBER_ATTR, RUN_ATTR
from .config import SEARCHABLE, StudyConfig
from .objectives import mean_rounds
from .sampling import suggest
from .tracking import Tracker, flatten, rounds_csv


def _retried_number(trial: optuna.Trial) -> int | None:
    """The attempt this trial retries, or None for a fresh trial.

    Both kinds of re-queue (Optuna's heartbeat retry, and ours after an
    interrupt) copy the user attrs, so a retry starts with its predecessor's number.
    """
    return trial.user_attrs.get(NUMBER_ATTR)



@dataclass
class Hooks:
    """Progress callbacks for a front end (the CLI's progress bars)."""

    trial_start: Callable[[int], None] = lambda number: None
    round_done: Callable[[int, RoundResult], None] = lambda number, rec: None
    iteration: Callable[[int, int, int], None] | None = None
    trial_end: Callable[[optuna.trial.FrozenTrial], None] = lambda trial: None



# --------------------------------------------------------------------------- one trial


class TrialFailed(RuntimeError):
    pass


class Objective:
    """The Optuna objective: ticket searches for one trial, logged to a child MLflow run."""

    def __init__(self, cfg: StudyConfig, tracker: Tracker, experiment_id: str, parent_run_id: str,
                 hooks: Hooks | None = None, cache: RoundCache | None = None):
        self.cfg, self.tracker = cfg, tracker
        self.experiment_id, self.parent_run_id = experiment_id, parent_run_id
        self.hooks = hooks or Hooks()
        self.objectives = cfg.objectives
        self.cache = cache

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        cfg, study_cfg = self.cfg, self.cfg.study
        values = {key: suggest(trial, p) for key, p in cfg.searched.items()}
        seeds = [study_cfg.seed + i for i in range(study_cfg.replicates)]
        first = cfg.trial_config(values, seeds[0])
        lineage = self._close_lineage(trial)
        retry_tags = {"retry_of": lineage[-1], "retry_of_trial": _retried_number(trial)} if lineage else {}
        trial.set_user_attr(NUMBER_ATTR, trial.number)
        for inherited in ("fail_reason", "stop_reason"):  # a retry copies its predecessor's attrs; not its outcome
            if trial.user_attrs.get(inherited):
                trial.set_user_attr(inherited, "")
        run_id = self.tracker.start_run(
            self.experiment_id, f"trial-{trial.number}", parent_run_id=self.parent_run_id,
            tags={"optuna.study": trial.study.study_name, "optuna.trial": trial.number, "state": "RUNNING",
                  "config_hash": first.hash(), **retry_tags, **{f"search.{k}": v for k, v in values.items()}})
        trial.set_user_attr(RUN_ATTR, run_id)
        trial.set_user_attr(LINEAGE_ATTR, lineage)
        trial.set_user_attr("seeds", seeds)
        # Rounds that an earlier run of this trial's lineage already logged are not logged again.
        self._logged = {key: self._lineage_steps(lineage, key) for key in self._step_keys(seeds)}
        trial.set_user_attr("params_all", {k: _plain(v) for k, v in self._settings(first).items()})
        self.hooks.trial_start(trial.number)
        per_seed: list[list[dict]] = []
        try:
            self.tracker.log_params(run_id, {**flatten(first.to_dict()), "seeds": seeds,
                                             "replicates": len(seeds), "epsilon": study_cfg.epsilon})
            for i, seed in enumerate(seeds):
                rounds: list[dict] = []
                per_seed.append(rounds)
                self._search(trial, run_id, cfg.trial_config(values, seed), rounds, seed, report=(i == 0))
            return self._finish(trial, run_id, per_seed)
        except optuna.TrialPruned as exc:
            self._store_rounds(trial, per_seed)
            trial.set_user_attr("stop_reason", str(exc))
            self.tracker.set_tags(run_id, {"state": "PRUNED"})
            self.tracker.end_run(run_id, "KILLED", reason=f"pruned: {exc}")
            raise
        except BaseException as exc:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            self._store_rounds(trial, per_seed)
            _try(lambda: trial.set_user_attr("fail_reason", reason[:1000]))
            _try(lambda: self.tracker.set_tags(run_id, {"state": "FAIL"}))
            _try(lambda: self.tracker.end_run(run_id, "FAILED", reason=reason))
            if isinstance(exc, KeyboardInterrupt):
                # Queue the same settings first for the next run; it resumes from the checkpoints.
                _try(lambda: trial.study.enqueue_trial(trial.params, user_attrs=trial.user_attrs))
            raise

    # ------------------------------------------------------------------ retries

    def _close_lineage(self, trial: optuna.Trial) -> list[str]:
        """MLflow runs of the earlier attempts at this trial (oldest first), closed if still RUNNING.

        A retry (heartbeat re-queue or an interrupted trial's re-queue) carries
        its predecessor's user attrs, so the run ids chain back.
        """
        attrs = trial.user_attrs
        if _retried_number(trial) is None or RUN_ATTR not in attrs:
            return []
        lineage = [*attrs.get(LINEAGE_ATTR, []), attrs[RUN_ATTR]]
        for run_id in lineage:
            _try(lambda run_id=run_id: self._close_stale(run_id, trial.number))
        return lineage

    def _close_stale(self, run_id: str, retry_number: int) -> None:
        if self.tracker.run_status(run_id) == "RUNNING":
            self.tracker.set_tags(run_id, {"state": "FAIL"})
            self.tracker.end_run(run_id, "FAILED", reason=f"worker died; retried as trial {retry_number}")

    def _step_keys(self, seeds: list[int]) -> list[str]:
        if len(seeds) == 1:
            return ["val_accuracy"]
        return [f"seed_{s}/val_accuracy" for s in seeds]

    def _lineage_steps(self, lineage: list[str], key: str) -> set[int]:
        steps: set[int] = set()
        for run_id in lineage:
            steps |= self.tracker.logged_steps(run_id, key)
        return steps

    def _settings(self, tcfg) -> dict[str, Any]:
        """The value of every searchable setting in this trial (searched or fixed), for reports."""
        d = tcfg.to_dict()
        return {k: d[path.split(".")[0]][path.split(".")[1]] for k, path in SEARCHABLE.items()}

    def _search(self, trial: optuna.Trial, run_id: str, tcfg, rounds: list[dict], seed: int, report: bool) -> None:
        prefix = "" if self.cfg.study.replicates == 1 else f"seed_{seed}/"
        study_cfg = self.cfg.study
        single = len(self.objectives) == 1

        logged = self._logged.get(f"{prefix}val_accuracy", set())

        def on_round(rec: RoundResult) -> None:
            d = rec.to_dict()
            rounds.append(d)
            if rec.round not in logged:
                self.tracker.log_round(run_id, d, prefix)
            self.hooks.round_done(trial.number, rec)
            if single and report:
                trial.report(self.objectives[0].value(rounds, study_cfg.epsilon), rec.round)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruner stopped the trial at round {rec.round}")
            if study_cfg.stop_on_drop and rec.round > 0:
                drop = rounds[0]["val_accuracy"] - rec.val_accuracy
                if drop > study_cfg.max_accuracy_drop:
                    raise optuna.TrialPruned(f"accuracy drop {drop:.4f} > max_accuracy_drop "
                                             f"{study_cfg.max_accuracy_drop} at round {rec.round}")

        TicketSearch(tcfg, cache=self.cache).run(on_round=on_round, progress=self.hooks.iteration)

    def _store_rounds(self, trial: optuna.Trial, per_seed: list[list[dict]]) -> None:
        finished = [r for r in per_seed if r]
        if finished:
            _try(lambda: trial.set_user_attr("rounds", _compact(mean_rounds(finished))))

    def _finish(self, trial: optuna.Trial, run_id: str, per_seed: list[list[dict]]) -> float | list[float]:
        eps = self.cfg.study.epsilon
        mean = mean_rounds(per_seed)
        values = [sum(o.value(r, eps) for r in per_seed) / len(per_seed) for o in self.objectives]
        for v, o in zip(values, self.objectives, strict=True):
            if not math.isfinite(v):
                raise TrialFailed(f"objective {o.name} is {v}")
        trial.set_user_attr("rounds", _compact(mean))
        constraints = self._constraints(mean)
        for name, value in constraints.items():
            trial.set_constraint(name, value)

        if len(per_seed) > 1:
            for rnd in mean:
                self.tracker.log_round(run_id, rnd)
        self.tracker.log_metrics(run_id, {f"objective.{o.metric_key}": v for o, v in zip(self.objectives, values,
                                                                                          strict=True)})
        self.tracker.log_metrics(run_id, {f"constraint.{k}": v for k, v in constraints.items()})
        self._log_artifacts(run_id, trial.number, mean)
        self.tracker.set_tags(run_id, {"state": "COMPLETE", "feasible": all(v <= 0 for v in constraints.values())})
        self.tracker.end_run(run_id, "FINISHED")
        return values[0] if len(values) == 1 else values

    def _constraints(self, rounds: list[dict]) -> dict[str, float]:
        s = self.cfg.study
        out = {}
        if s.max_accuracy_drop is not None:
            out["accuracy_drop"] = rounds[0]["val_accuracy"] - rounds[-1]["val_accuracy"] - s.max_accuracy_drop
        if s.min_dense_accuracy is not None:
            out["dense_accuracy"] = s.min_dense_accuracy - rounds[0]["val_accuracy"]
        return out

    def _log_artifacts(self, run_id: str, number: int, rounds: list[dict]) -> None:
        import json

        from .reports import plot_rounds

        self.tracker.log_files(run_id, {
            "rounds.csv": rounds_csv(rounds),
            "rounds.json": json.dumps(rounds, indent=2),
            "accuracy_vs_density.png": lambda path: plot_rounds(rounds, path, title=f"trial {number}"),
        })


def _compact(rounds: list[dict]) -> list[dict]:
    """Round records for Optuna user attrs, without the per-layer breakdown (kept in MLflow)."""
    return [{k: v for k, v in r.items() if k != "layer_density"} for r in rounds]


def _plain(v: Any) -> Any:
    return v if isinstance(v, int | float | str | bool) or v is None else str(v)


def _try(fn: Callable[[], Any]) -> None:
    """Best effort while already failing: never mask the original error."""
    try:
        fn()
    except Exception:
        pass


