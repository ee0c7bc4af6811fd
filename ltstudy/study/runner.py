"""Optuna studies over ticket searches, tracked in MLflow: create or continue a study, and run its trials.

One Optuna trial = one ticket search per replicate seed (objective.py). The
runner asks Optuna for trials and tells it their outcomes itself (ask/tell),
so that it decides what a trial counts for: `[study].n_trials` is the study's
total of finished (complete or pruned) trials, a re-run completes what is
missing, a repeated setting is skipped without using up a trial, and trials
can be trained one at a time or packed side by side (`[study].pack`). Trials
run in this process (`--jobs 1`) or in N worker processes sharing a journal or
RDB storage (workers.py; Optuna's n_jobs uses threads, which the GIL and
MLflow's thread-local state rule out).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from ..engine.cache import RoundCache
from ..engine.config import ConfigError
from ..engine.data import load_dataset
from ..engine.ticket import RoundJob, drive_jobs, ticket_search
from ..engine.training import TrainResult, resolve_device
from .attrs import EXPERIMENT_ATTR, PARENT_ATTR
from .config import StudyConfig, describe, settings_changes, validate_with_data
from .frontier import ParetoTagger, pareto_trials
from .objective import COUNTED, Hooks, Outcome, TrialContext, TrialRun, _try
from .sampling import make_pruner, make_sampler, setting_key, space_size
from .storage import (
    check_cache_dir,
    check_storage,
    check_tracking_uri,
    open_storage,
    quiet_experimental,
    redact,
    storage_exists,
)
from .threads import set_threads
from .tracking import Tracker


@dataclass
class RunOptions:
    """Command-line choices that override the study file."""

    n_trials: int | None = None  # the study's total (default: [study].n_trials)
    more: int | None = None  # run this many trials beyond those already finished
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

    def target(self, cfg: StudyConfig, finished: int) -> int:
        """How many finished trials the study should have when this call ends."""
        if self.more is not None:
            return finished + self.more
        return cfg.study.n_trials if self.n_trials is None else self.n_trials


def n_counted(study: optuna.Study) -> int:
    """Finished trials: what n_trials counts (complete or pruned; skipped repeats and failures don't)."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


# --------------------------------------------------------------------------- checks before anything exists


def resolve(cfg: StudyConfig, opts: RunOptions) -> tuple[str, str, str]:
    """Check storage, tracking URI, data and the study's settings before anything is created; (storage, uri, name)."""
    storage_url, uri, name = opts.storage_url(cfg), cfg.tracking_uri(opts.tracking_uri), opts.name(cfg)
    if opts.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {opts.jobs}")
    if opts.n_trials is not None and opts.n_trials < 0:
        raise ConfigError(f"--n-trials must be >= 0, got {opts.n_trials}")
    if opts.more is not None and opts.more < 1:
        raise ConfigError(f"--more must be >= 1, got {opts.more}")
    check_storage(storage_url, jobs=opts.jobs)
    check_tracking_uri(uri)
    cache = opts.cache(cfg)
    if cache is not None:
        check_cache_dir(cache.root)
    device = resolve_device(cfg.base.device)
    data = load_dataset(cfg.base.data, device)
    validate_with_data(cfg, len(data.train))
    # Build one search to catch incompatible dataset/model pairs and layer names now.
    ticket_search(cfg.base, data)
    check_same_settings(cfg, storage_url, name)
    return storage_url, uri, name


def check_same_settings(cfg: StudyConfig, storage_url: str, name: str) -> None:
    """A study is continued only with the settings it was created with: its trials must stay comparable."""
    found = existing_study(storage_url, name)
    if found is None:
        return
    attrs = found.user_attrs
    if attrs.get("objectives", cfg.study.objectives) != cfg.study.objectives:
        raise ConfigError(f"study '{name}' exists with objectives {attrs.get('objectives')}; the file asks for "
                          f"{cfg.study.objectives}. Start a new study with --study-name NAME (or [study].name)")
    old = attrs.get("settings")
    if old is not None:
        import json

        changes = settings_changes(old, json.loads(json.dumps(cfg.settings(), default=str)))
        if changes:
            shown = "; ".join(changes[:4]) + (f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
            raise ConfigError(f"study '{name}' was created with other settings ({shown}), so its trials would not be "
                              "comparable; start a new study with --study-name NAME (or [study].name), or restore "
                              "the file")
    elif attrs.get("study_hash") not in (None, cfg.hash()):
        raise ConfigError(f"study '{name}' was created with other settings; start a new study with --study-name "
                          "NAME (or [study].name)")


# --------------------------------------------------------------------------- opening studies


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


@dataclass
class Opened:
    study: optuna.Study
    created: bool  # this call created it (and so owns creating its MLflow parent run)
    notes: list[str] = field(default_factory=list)


def open_study(cfg: StudyConfig, storage_url: str, name: str, stream: int = 0, n_trials: int | None = None) -> Opened:
    """Create the study, or load it to continue (race-safe: concurrent callers agree on one study).

    The sampler's seed is offset by the trials already in the study and by
    `stream` (one per worker), so a resumed study or a second worker does not
    replay the same draws as the first run.
    """
    s = cfg.study
    storage = open_storage(storage_url, heartbeat=(s.heartbeat_interval, s.grace_period, s.max_retry))
    found = existing_study(storage_url, name)
    offset = (len(found.get_trials(deepcopy=False)) if found is not None else 0) + 1_000_003 * stream
    sampler, sampler_note = make_sampler(cfg, offset, n_trials if n_trials is not None else s.n_trials)
    pruner, pruner_note = make_pruner(cfg)
    created = False
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=cfg.directions, sampler=sampler,
                                    pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if created:
        import json

        study.set_user_attr("objectives", s.objectives)
        study.set_user_attr("study_file", cfg.path)
        study.set_user_attr("settings", json.loads(json.dumps(cfg.settings(), default=str)))
        study.set_user_attr("study_hash", cfg.hash())
        study.set_user_attr("epsilon", s.epsilon)
        with quiet_experimental():  # names in optuna-dashboard and Optuna's plots, not "0" and "1"
            study.set_metric_names([o.name for o in cfg.objectives])
    return Opened(study, created, [n for n in (sampler_note, pruner_note) if n])


def attach_tracking(study: optuna.Study, cfg: StudyConfig, tracker: Tracker, created: bool = True,
                    wait: float = 60.0) -> tuple[str, str]:
    """The study's experiment and parent run: made once, by whoever created the study; reopened on resume."""
    exp_id = tracker.experiment_id(study.study_name)
    parent = study.user_attrs.get(PARENT_ATTR)
    if not parent and not created:  # the creator is making the parent run right now (a fresh cluster)
        deadline = time.monotonic() + wait
        while not parent and time.monotonic() < deadline:
            time.sleep(0.2 + random.random() * 0.3)
            parent = optuna.load_study(study_name=study.study_name, storage=study._storage).user_attrs.get(PARENT_ATTR)
    if parent and tracker.reopen_run(parent):
        return exp_id, parent
    parent = tracker.start_run(exp_id, study.study_name, tags={"optuna.study": study.study_name,
                                                              "study_file": cfg.path, "role": "study"})
    study.set_user_attr(PARENT_ATTR, parent)
    study.set_user_attr(EXPERIMENT_ATTR, exp_id)
    tracker.log_params(parent, {"objectives": cfg.study.objectives, "sampler": cfg.study.sampler,
                                "replicates": cfg.study.replicates, "epsilon": cfg.study.epsilon,
                                **{f"search.{k}": describe(p) for k, p in cfg.search.items()}})
    return exp_id, parent


# --------------------------------------------------------------------------- the ask/tell loop


@dataclass
class LoopReport:
    told: list[int] = field(default_factory=list)  # trials that ran here (complete, pruned or failed)
    skipped: list[int] = field(default_factory=list)  # repeats the sampler proposed
    notes: list[str] = field(default_factory=list)  # why the loop stopped before its budget; packing's notes


MAX_REPEATS = 50  # proposals of already-evaluated settings in a row before the loop gives up


def run_trials(study: optuna.Study, ctx: TrialContext, *, budget: int | None, target: int,
               count_running: bool = False, pack: int = 1,
               callbacks: tuple[Callable[[optuna.Study, optuna.trial.FrozenTrial], None], ...] = (),
               report: LoopReport | None = None) -> LoopReport:
    """Ask, run and tell trials until `budget` of them ran here, or the study has `target` finished ones.

    `count_running` counts other workers' running trials towards the target
    (workers on many machines, whose stale trials are failed by heartbeats).
    `report` is filled as the loop goes (so it is complete when Ctrl-C ends it).
    """
    report = report if report is not None else LoopReport()
    size = space_size(ctx.cfg)
    repeats = 0  # proposals of evaluated settings since the last trial that ran

    def stop() -> bool:
        if budget is not None and len(report.told) >= budget:
            return True
        states = (*COUNTED, TrialState.RUNNING) if count_running else COUNTED
        if len(study.get_trials(deepcopy=False, states=states)) >= target:
            return True
        if size is not None:
            done = {setting_key(t.params) for t in study.get_trials(deepcopy=False, states=COUNTED)}
            if len(done) >= size:
                report.notes.append(f"every one of the {size} settings of the search space has been evaluated")
                return True
        if repeats >= MAX_REPEATS:
            report.notes.append(f"the sampler proposed only already-evaluated settings {MAX_REPEATS} times in a "
                                "row")
            return True
        return False

    def trials() -> Iterator[Generator[RoundJob, TrainResult, Outcome]]:
        nonlocal repeats
        while not stop():
            if _heartbeats(study):
                with quiet_experimental():
                    optuna.storages.fail_stale_trials(study)
            trial = study.ask()
            run = TrialRun(ctx, trial)
            try:
                skipped = run.begin()  # (an Outcome when the trial ends before any training)
            except BaseException as exc:
                run.abort(exc)
                _tell(study, trial, Outcome(TrialState.FAIL, reason="interrupted"))
                raise
            if skipped is not None and skipped.state is None:  # a repeat: not a trial
                trial.set_user_attr("duplicate_of", skipped.duplicate_of)
                trial.set_user_attr("fail_reason", skipped.reason)
                _tell(study, trial, skipped)
                report.skipped.append(trial.number)
                repeats += 1
                continue
            repeats = 0
            report.told.append(trial.number)
            if skipped is not None:  # it ended while starting (e.g. the tracking store failed)
                frozen = _tell(study, trial, skipped)
                for callback in callbacks:
                    _try(lambda callback=callback, frozen=frozen: callback(study, frozen))
                continue
            yield _told(study, run, callbacks)

    if pack > 1:
        from .packed import drive_packed_trials

        drive_packed_trials(trials(), ctx, pack, report.notes)
    else:
        data = load_dataset(ctx.cfg.base.data, resolve_device(ctx.cfg.base.device))
        for jobs in trials():
            drive_jobs(jobs, data, ctx.hooks.iteration)
    return report


def _told(study: optuna.Study, run: TrialRun, callbacks) -> Generator[RoundJob, TrainResult, Outcome]:
    """A trial's jobs, with its heartbeat while it runs and its outcome told to Optuna when it ends."""
    from optuna.storages._heartbeat import get_heartbeat_thread  # (what Study.optimize uses)

    heartbeat = get_heartbeat_thread(run.trial._trial_id, study._storage)
    heartbeat.start()
    try:
        outcome = yield from run.jobs()
    except BaseException:
        heartbeat.join()
        _try(lambda: _tell(study, run.trial, Outcome(TrialState.FAIL, reason="interrupted")))
        raise
    heartbeat.join()
    frozen = _tell(study, run.trial, outcome)
    for callback in callbacks:
        _try(lambda callback=callback: callback(study, frozen))
    return outcome


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: Outcome) -> optuna.trial.FrozenTrial:
    if outcome.state == TrialState.COMPLETE:
        return study.tell(trial, outcome.values, skip_if_finished=True)
    return study.tell(trial, state=outcome.state or TrialState.FAIL, skip_if_finished=True)


def _heartbeats(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


# --------------------------------------------------------------------------- a study run


@dataclass
class StudySummary:
    name: str
    storage: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    finished_before: int
    target: int
    trials: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    interrupted: bool = False
    ran: list[int] = field(default_factory=list)  # trials this call ran
    skipped: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def new_trials(self) -> list[optuna.trial.FrozenTrial]:
        """Trials this call ran (a resumed, re-queued trial included; skipped repeats not)."""
        ran = set(self.ran)
        return [t for t in self.trials if t.number in ran]


def run_study(cfg: StudyConfig, opts: RunOptions, hooks: Hooks | None = None) -> StudySummary:
    storage_url, uri, name = resolve(cfg, opts)
    set_threads(cfg.study.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    found = existing_study(storage_url, name)
    before = n_counted(found) if found is not None else 0
    target = opts.target(cfg, before)
    opened = open_study(cfg, storage_url, name, n_trials=target)
    study = opened.study
    tracker = Tracker(uri)
    exp_id, parent = attach_tracking(study, cfg, tracker, created=True)
    summary = StudySummary(name, storage_url, uri, exp_id, parent, before, target, notes=list(opened.notes))
    status = "FINISHED"
    hooks = hooks or Hooks()
    try:
        missing = max(0, target - before)
        hooks.study_start(missing)
        if opts.jobs == 1 or missing == 0:
            ctx = TrialContext(cfg, tracker, exp_id, parent, hooks, opts.cache(cfg))
            report = LoopReport(summary.ran, summary.skipped)
            run_trials(study, ctx, budget=missing, target=target, pack=cfg.study.pack,
                       callbacks=(ParetoTagger(tracker), lambda s, t: hooks.trial_end(t)), report=report)
            summary.notes += report.notes
        else:
            from . import workers  # (imports this module)

            summary.ran, summary.skipped, notes = workers._run_workers(cfg, opts, storage_url, uri, name, missing,
                                                                        target, hooks)
            summary.notes += notes
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

    from .plots import plot_pareto
    from .reports import round_frontier, trial_rows

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


__all__ = ["LoopReport", "Opened", "RunOptions", "StudySummary", "attach_tracking", "check_same_settings",
           "existing_study", "load_existing", "n_counted", "open_study", "resolve", "run_study",
           "run_trials", "sweep_orphans"]
