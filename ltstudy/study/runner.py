"""Optuna studies over ticket searches, tracked in MLflow.

One Optuna trial = one ticket search per replicate seed. The sampler picks
the [search] settings; objectives come from the vocabulary in objectives.py
and read validation numbers only. Trials run in this process (`jobs = 1`) or
in N worker processes sharing a journal or RDB storage (`jobs > 1`; Optuna's
n_jobs uses threads, which the GIL and MLflow's thread-local state rule out).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from ..engine.cache import RoundCache
from ..engine.config import ConfigError
from ..engine.data import load_dataset
from ..engine.ticket import TicketSearch
from ..engine.training import resolve_device
from .attrs import EXPERIMENT_ATTR, PARENT_ATTR
from .config import Param, StudyConfig, validate_with_data
from .frontier import ParetoTagger, pareto_trials
from .objective import Hooks, Objective, _try
from .sampling import make_pruner, make_sampler
from .storage import (
    check_cache_dir,
    check_storage,
    check_tracking_uri,
    open_storage,
    redact,
    storage_exists,
)
from .tracking import Tracker


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
            from . import workers  # (imports this module)

            workers._run_workers(cfg, opts, storage_url, uri, name, n_trials, hooks)
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


