"""Optuna studies over ticket searches, tracked in MLflow.

One Optuna trial = one ticket search per replicate seed. The sampler picks
the [search] settings; objectives come from the vocabulary in objectives.py
and read validation numbers only. Trials run in this process (`jobs = 1`) or
in N worker processes sharing a journal or RDB storage (`jobs > 1`; Optuna's
n_jobs uses threads, which the GIL and MLflow's thread-local state rule out).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from .cache import RoundCache
from .config import ConfigError
from .data import load_dataset
from .objectives import mean_rounds
from .storage import (
    check_cache_dir,
    check_storage,
    check_tracking_uri,
    open_storage,
    quiet_experimental,
    redact,
    storage_exists,
)
from .study_config import SEARCHABLE, Param, StudyConfig, validate_with_data
from .ticket import RoundResult, TicketSearch
from .tracking import Tracker, flatten, rounds_csv
from .training import resolve_device

PARENT_ATTR = "mlflow_parent_run_id"
EXPERIMENT_ATTR = "mlflow_experiment_id"
RUN_ATTR = "mlflow_run_id"
PARETO_ATTR = "pareto_trials"
LINEAGE_ATTR = "mlflow_lineage_run_ids"
NUMBER_ATTR = "trial_number"


def _retried_number(trial: optuna.Trial) -> int | None:
    """The attempt this trial retries, or None for a fresh trial.

    Both kinds of re-queue (Optuna's heartbeat retry, and ours after an
    interrupt) copy the user attrs, so a retry starts with its predecessor's number.
    """
    return trial.user_attrs.get(NUMBER_ATTR)


@dataclass
class RunOptions:
    """Command-line choices that override the study file."""

    n_trials: int | None = None
    jobs: int = 1
    storage: str | None = None
    tracking_uri: str | None = None
    study_name: str | None = None
    cache_dir: str | None = None
    no_cache: bool = False

    def storage_url(self, cfg: StudyConfig) -> str:
        return self.storage or cfg.study.storage

    def name(self, cfg: StudyConfig) -> str:
        return self.study_name or cfg.study.name

    def cache(self, cfg: StudyConfig) -> RoundCache | None:
        if self.no_cache or not cfg.study.cache:
            return None
        return RoundCache(cfg.cache_dir(self.cache_dir))


@dataclass
class Hooks:
    """Progress callbacks for a front end (the CLI's progress bars)."""

    trial_start: Callable[[int], None] = lambda number: None
    round_done: Callable[[int, RoundResult], None] = lambda number, rec: None
    iteration: Callable[[int, int, int], None] | None = None
    trial_end: Callable[[optuna.trial.FrozenTrial], None] = lambda trial: None


# --------------------------------------------------------------------------- samplers and pruners


def make_sampler(cfg: StudyConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    seed, name = (cfg.study.seed + offset) % 2**32, cfg.study.sampler  # numpy seeds are 32-bit
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(cfg.grid(), seed=seed)
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    name = cfg.study.pruner
    if name == "none" or len(cfg.directions) > 1:
        return optuna.pruners.NopPruner()  # multi-objective trials stop through stop_on_drop instead
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        "percentile": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=3, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1),
        "successive-halving": lambda: optuna.pruners.SuccessiveHalvingPruner(),
    }[name]()


def suggest(trial: optuna.Trial, param: Param) -> Any:
    if param.choices is not None:
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.is_int:
        return trial.suggest_int(param.key, int(param.low), int(param.high), step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


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


# --------------------------------------------------------------------------- Pareto tags


class ParetoTagger:
    """After each trial, tag the MLflow runs of the current Pareto-optimal trials pareto=true."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def __call__(self, study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        _try(lambda: self.update(study))

    def update(self, study: optuna.Study) -> None:
        best = {t.number for t in pareto_trials(study)}
        before = set(study.user_attrs.get(PARETO_ATTR, []))
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for number in best ^ before:
            run_id = trials[number].user_attrs.get(RUN_ATTR) if number in trials else None
            if run_id:
                self.tracker.set_tags(run_id, {"pareto": str(number in best).lower()})
        study.set_user_attr(PARETO_ATTR, sorted(best))


def pareto_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    if len(study.directions) == 1:
        try:
            return [study.best_trial]
        except ValueError:  # no feasible trial
            return []
    return study.best_trials


# --------------------------------------------------------------------------- studies


def resolve(cfg: StudyConfig, opts: RunOptions) -> tuple[str, str, str]:
    """Check storage, tracking URI and data before anything is created; (storage, uri, name)."""
    storage_url, uri, name = opts.storage_url(cfg), cfg.tracking_uri(opts.tracking_uri), opts.name(cfg)
    if opts.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {opts.jobs}")
    if opts.n_trials is not None and opts.n_trials < 0:
        raise ConfigError(f"--n-trials must be >= 0, got {opts.n_trials}")
    check_storage(storage_url, jobs=opts.jobs)
    check_tracking_uri(uri)
    cache = opts.cache(cfg)
    if cache is not None:
        check_cache_dir(cache.root)
    device = resolve_device(cfg.base.device)
    data = load_dataset(cfg.base.data, device)
    validate_with_data(cfg, len(data.train))
    # Build one model to catch incompatible dataset/model pairs and layer names now.
    TicketSearch(cfg.base, data)
    return storage_url, uri, name


def existing_study(storage_url: str, name: str) -> optuna.Study | None:
    if not storage_exists(storage_url):  # opening a journal or SQLite file that isn't there would create it
        return None
    try:
        return optuna.load_study(study_name=name, storage=open_storage(storage_url))
    except KeyError:
        return None


def load_existing(storage_url: str, name: str, cfg: StudyConfig | None = None) -> optuna.Study:
    """A study that must exist already (pareto, compare, repair); with `cfg`, opened with heartbeats."""
    check_storage(storage_url)
    study = existing_study(storage_url, name)
    if study is not None and cfg is not None:
        s = cfg.study
        storage = open_storage(storage_url, heartbeat=(s.heartbeat_interval, s.grace_period, s.max_retry))
        study = optuna.load_study(study_name=name, storage=storage)
    if study is None:
        raise ConfigError(f"no study named '{name}' in {redact(storage_url)}; run `ltstudy run` first "
                          "(or pass --storage / --study-name)")
    return study


def open_study(cfg: StudyConfig, storage_url: str, name: str, stream: int = 0) -> optuna.Study:
    """Create the study, or load it to continue; the objectives must match.

    The sampler's seed is offset by the trials already in the study and by `stream` (one per worker), so a
    resumed study or a second worker does not replay the same draws as the first run.
    """
    found = existing_study(storage_url, name)
    offset = (len(found.get_trials(deepcopy=False)) if found is not None else 0) + 1_000_003 * stream
    if found is not None:
        want = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
                for d in cfg.directions]
        if list(found.directions) != want or found.user_attrs.get("objectives", cfg.study.objectives) != \
                cfg.study.objectives:
            raise ConfigError(f"study '{name}' exists with objectives {found.user_attrs.get('objectives')}; the file "
                              f"asks for {cfg.study.objectives}. Use another --study-name")
    s = cfg.study
    storage = open_storage(storage_url, heartbeat=(s.heartbeat_interval, s.grace_period, s.max_retry))
    study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                directions=cfg.directions, sampler=make_sampler(cfg, offset), pruner=make_pruner(cfg))
    if found is None:
        study.set_user_attr("objectives", cfg.study.objectives)
        study.set_user_attr("study_file", cfg.path)
        study.set_user_attr("study_hash", cfg.hash())
    return study


def attach_tracking(study: optuna.Study, cfg: StudyConfig, tracker: Tracker) -> tuple[str, str]:
    """The study's experiment and parent run (created once, reopened on resume)."""
    exp_id = tracker.experiment_id(study.study_name)
    parent = study.user_attrs.get(PARENT_ATTR)
    if not parent or not tracker.reopen_run(parent):
        parent = tracker.start_run(exp_id, study.study_name, tags={"optuna.study": study.study_name,
                                                                  "study_file": cfg.path, "role": "study"})
        study.set_user_attr(PARENT_ATTR, parent)
        study.set_user_attr(EXPERIMENT_ATTR, exp_id)
        tracker.log_params(parent, {"objectives": cfg.study.objectives, "sampler": cfg.study.sampler,
                                    "replicates": cfg.study.replicates, "epsilon": cfg.study.epsilon,
                                    **{f"search.{k}": _describe(p) for k, p in cfg.search.items()}})
    return exp_id, parent


def _describe(p: Param) -> str:
    if p.choices is not None:
        return str(list(p.choices))
    if p.low is not None:
        return f"[{p.low}, {p.high}]" + (f" step {p.step}" if p.step else "") + (" log" if p.log else "")
    return str(p.fixed)


@dataclass
class StudySummary:
    name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials_before: int
    trials: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    interrupted: bool = False
    queued_before: set[int] = field(default_factory=set)  # WAITING trials (retries) this call may pick up

    @property
    def new_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Trials this call added, plus queued ones (an interrupted trial's retry) that it ran."""
        return [t for t in self.trials if t.number >= self.trials_before
                or (t.number in self.queued_before and t.state != TrialState.WAITING)]


def run_study(cfg: StudyConfig, opts: RunOptions, hooks: Hooks | None = None) -> StudySummary:
    storage_url, uri, name = resolve(cfg, opts)
    n_trials = cfg.study.n_trials if opts.n_trials is None else opts.n_trials
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg, storage_url, name)
    tracker = Tracker(uri)
    exp_id, parent = attach_tracking(study, cfg, tracker)
    before = len(study.get_trials(deepcopy=False))
    summary = StudySummary(name, storage_url, uri, exp_id, parent, before)
    summary.queued_before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))}
    status = "FINISHED"
    try:
        if opts.jobs == 1:
            objective = Objective(cfg, tracker, exp_id, parent, hooks, cache=opts.cache(cfg))
            study.optimize(objective, n_trials=n_trials, catch=(Exception,),
                           callbacks=[ParetoTagger(tracker), lambda s, t: (hooks or Hooks()).trial_end(t)])
        else:
            _run_workers(cfg, opts, storage_url, uri, name, n_trials, hooks)
    except KeyboardInterrupt:
        status, summary.interrupted = "KILLED", True
    except BaseException:  # e.g. a worker process died: the study did not finish
        status = "FAILED"
        raise
    finally:
        _try(lambda: sweep_orphans(study, tracker, exp_id, parent))
        _try(lambda: ParetoTagger(tracker).update(study))
        _try(lambda: _log_study_summary(study, cfg, tracker, parent))
        tracker.end_run(parent, status, reason="interrupted" if summary.interrupted else None)
    summary.trials = study.get_trials(deepcopy=False)
    return summary


def sweep_orphans(study: optuna.Study, tracker: Tracker, exp_id: str, parent: str) -> int:
    """Close child runs left RUNNING whose Optuna trial is no longer running (a dead worker's)."""
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    closed = 0
    for run in tracker.child_runs(exp_id, parent, status="RUNNING"):
        number = run.data.tags.get("optuna.trial")
        state = states.get(int(number)) if number and number.isdigit() else None
        if state != TrialState.RUNNING:
            tracker.set_tags(run.info.run_id, {"state": "FAIL"})
            tracker.end_run(run.info.run_id, "FAILED", reason="worker stopped before the trial finished")
            closed += 1
    return closed


def _log_study_summary(study: optuna.Study, cfg: StudyConfig, tracker: Tracker, parent: str) -> None:
    import json

    from .reports import plot_pareto, round_frontier, trial_rows

    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(study)
    frontier = round_frontier(trials)
    tracker.log_metrics(parent, {"n_trials": len(trials),
                                 "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
                                 "n_pareto": len(pareto_trials(study))})
    tracker.log_files(parent, {
        "summary.json": json.dumps(rows, indent=2, default=str),
        "round_frontier.json": json.dumps(frontier, indent=2, default=str),
        "pareto.png": lambda path: plot_pareto(trials, frontier, path, title=study.study_name),
    })


# --------------------------------------------------------------------------- worker processes


def _run_workers(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, n_trials: int,
                 hooks: Hooks | None) -> None:
    """N processes, each with cores/N torch threads, splitting n_trials exactly between them."""
    import time

    jobs = opts.jobs
    threads = max(1, (os.cpu_count() or 1) // jobs)
    shares = [n_trials // jobs + (i < n_trials % jobs) for i in range(jobs)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=(cfg, opts, storage_url, uri, name, share, threads),
                         kwargs={"stream": i + 1})
             for i, share in enumerate(shares) if share]
    for p in procs:
        p.start()
    study = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    seen: set[int] = set()
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(0.5)
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                               TrialState.FAIL)):
                if t.number not in seen:
                    seen.add(t.number)
                    if hooks:
                        hooks.trial_end(t)
    except KeyboardInterrupt:
        for p in procs:  # workers got the SIGINT too; give them time to close their runs
            p.join(timeout=30)
        raise
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if failed:
        raise TrialFailed(f"{len(failed)} worker process(es) exited with codes {failed}")


def worker_main(cfg: StudyConfig, opts: RunOptions, storage_url: str, uri: str, name: str, n_trials: int,
                threads: int, stream: int = 0) -> None:
    """One `--jobs` worker process: its share of the trials, on cores/N threads."""
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sigterm_as_interrupt()
    study = open_study(cfg, storage_url, name, stream)
    tracker = Tracker(uri)
    exp_id = study.user_attrs[EXPERIMENT_ATTR]
    parent = study.user_attrs[PARENT_ATTR]
    try:
        study.optimize(Objective(cfg, tracker, exp_id, parent, cache=opts.cache(cfg)), n_trials=n_trials,
                       catch=(Exception,), callbacks=[ParetoTagger(tracker)])
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def sigterm_as_interrupt() -> None:
    """SIGTERM (a scheduler's pre-emption) behaves like Ctrl-C: close the trial's run, then leave."""

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


# --------------------------------------------------------------------------- workers on many machines


@dataclass
class WorkerSummary:
    name: str
    finished: list[optuna.trial.FrozenTrial]
    repaired_trials: int
    repaired_runs: int
    interrupted: bool = False


def run_worker(cfg: StudyConfig, opts: RunOptions, hooks: Hooks | None = None) -> WorkerSummary:
    """`ltstudy worker`: join an existing study and run trials until it has enough.

    With --n-trials N the worker runs N trials; otherwise it stops once the
    study has [study].n_trials finished (complete or pruned) trials.
    """
    storage_url, uri, name = resolve(cfg, opts)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if existing_study(storage_url, name) is None:
        raise ConfigError(f"no study named '{name}' in {redact(storage_url)}; create it once with "
                          f"`ltstudy run {cfg.path or 'STUDY.toml'} --storage URL --n-trials 0`")
    # Workers on other machines may join at the same moment: a random stream keeps their draws apart.
    study = open_study(cfg, storage_url, name, stream=1 + int.from_bytes(os.urandom(3), "big"))
    tracker = Tracker(uri)
    exp_id = study.user_attrs.get(EXPERIMENT_ATTR) or tracker.experiment_id(name)
    parent = study.user_attrs.get(PARENT_ATTR)
    if parent is None:
        exp_id, parent = attach_tracking(study, cfg, tracker)
        tracker.end_run(parent)
    repaired_trials, repaired_runs = repair_study(study, tracker)
    mine: list[optuna.trial.FrozenTrial] = []

    def done(s: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
        mine.append(t)
        (hooks or Hooks()).trial_end(t)
        if opts.n_trials is None and _n_finished(s) >= cfg.study.n_trials:
            s.stop()

    summary = WorkerSummary(name, mine, repaired_trials, repaired_runs)
    if opts.n_trials is None and _n_finished(study) >= cfg.study.n_trials:
        return summary
    try:
        study.optimize(Objective(cfg, tracker, exp_id, parent, hooks, cache=opts.cache(cfg)),
                       n_trials=opts.n_trials, catch=(Exception,), callbacks=[ParetoTagger(tracker), done])
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary


def _n_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def repair_study(study: optuna.Study, tracker: Tracker) -> tuple[int, int]:
    """Fail trials whose worker died (RDB heartbeats; they are re-queued) and close their MLflow runs.

    Returns (trials failed, runs closed). Safe while other workers run: only
    trials without a fresh heartbeat and runs whose trial is not RUNNING are touched.
    """
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    with quiet_experimental():
        optuna.storages.fail_stale_trials(study)
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))} - before
    exp_id, parent = study.user_attrs.get(EXPERIMENT_ATTR), study.user_attrs.get(PARENT_ATTR)
    closed = sweep_orphans(study, tracker, exp_id, parent) if exp_id and parent else 0
    return len(failed), closed
