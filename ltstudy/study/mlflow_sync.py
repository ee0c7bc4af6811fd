"""Rebuilding a study's MLflow runs from Optuna's storage (`ltstudy repair`).

Optuna's storage is the record of truth, and holds everything the runs hold:
each trial's settings, seeds, every round of every seed and control, its
values, constraints and state, and the study's Pareto front. So whatever
MLflow missed (a server that was away, a full disk under its store, a worker
killed between two writes) is logged again here, to the state a study that
never lost MLflow would have left: for every trial no longer running, its run
(created when there is none), parameters, dataset, every round not yet
logged, objective and constraint values, `rounds.csv`, `rounds.json` and the
figure, the `feasible` and `pareto` tags and its final state; for the study,
its run with the trial counts and `summary.json`, `round_frontier.json` and
`pareto.png`, closed once no trial is running. What is there already is not
logged twice. (Saved tickets lived in a temporary folder: they cannot be
rebuilt.)
"""

from __future__ import annotations

from typing import Any

from optuna.trial import TrialState

from .attrs import LINEAGE_ATTR, PARENT_ATTR, PARETO_ATTR, RUN_ATTR
from .config import StudyConfig
from .curves import mean_rounds
from .mlflow_logging import StudyLog, dense_instability_means

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def sync(log: StudyLog, study, cfg: StudyConfig) -> dict[str, int]:
    """Log what MLflow is missing of a study (see the module docstring); counts of what was done.

    `log` should be strict: a write that fails stops the rebuild instead of taking the log offline.
    """
    counts = {"runs_created": 0, "rounds_logged": 0, "runs_closed": 0, "artifacts_logged": 0, "summary_logged": 0}
    tracker = log.tracker
    trials = study.get_trials(deepcopy=False)
    exp_id = log.experiment(study.study_name)
    parent = study.user_attrs.get(PARENT_ATTR)
    if not parent or tracker.run(parent) is None:
        parent = log.start_study(study, cfg, exp_id)
        counts["runs_created"] += 1
    by_number = _runs_by_trial(log, exp_id, parent)
    owner: dict[str, int] = {}  # run id -> the trial it was made for (a retry inherits its predecessor's id)
    for t in trials:
        if t.user_attrs.get(RUN_ATTR):
            owner.setdefault(t.user_attrs[RUN_ATTR], t.number)
    data = _Data(cfg)
    for t in trials:
        if t.state not in FINISHED:
            continue
        run = by_number.get(t.number)
        seeds = t.user_attrs.get("seeds") or [cfg.study.seed]
        tcfg = cfg.trial_config(t.params, seeds[0])
        if run is None:
            run_id = tracker.start_run(exp_id, f"trial-{t.number}", parent_run_id=parent,
                                       tags=_trial_tags(study, t, tcfg.hash(), owner))
            counts["runs_created"] += 1
            run = tracker.run(run_id)
        run_id = run.info.run_id
        if "seeds" not in run.data.params:  # (MLflow was away when the trial began)
            log.trial_params(run_id, tcfg.to_dict(), {"seeds": seeds, "replicates": len(seeds),
                                                      "epsilon": cfg.study.epsilon})
        if not run.inputs.dataset_inputs and data.get() is not None:
            log.dataset(run_id, data.get())
        counts["rounds_logged"] += _sync_rounds(log, run_id, t, seeds)
        if t.values and not all(f"objective.{o.metric_key}" in run.data.metrics for o in cfg.objectives):
            log.trial_values(run_id, {o.metric_key: v for o, v in zip(cfg.objectives, t.values, strict=True)},
                             dict(t.constraints))
        if t.state == TrialState.COMPLETE:
            counts["artifacts_logged"] += _sync_artifacts(log, run_id, t, seeds)
            if "feasible" not in run.data.tags:
                tracker.set_tags(run_id, {"feasible": all(v <= 0 for v in t.constraints.values())})
        if run.info.status == "RUNNING" and tracker.run_status(run_id) == "RUNNING":
            _close_as_optuna_says(log, run_id, t)
            counts["runs_closed"] += 1
    _sync_pareto(log, study, _runs_by_trial(log, exp_id, parent))
    counts["summary_logged"] = _sync_summary(log, study, parent, cfg)
    if not any(t.state == TrialState.RUNNING for t in trials) and tracker.run_status(parent) == "RUNNING":
        tracker.end_run(parent, "FINISHED", reason="closed by ltstudy repair")
        counts["runs_closed"] += 1
    return counts


def _runs_by_trial(log: StudyLog, exp_id: str, parent: str) -> dict[int, Any]:
    """The study's child runs by trial number (the first one, where a trial has two)."""
    runs: dict[int, Any] = {}
    for run in sorted(log.tracker.child_runs(exp_id, parent), key=lambda r: r.info.start_time or 0):
        number = run.data.tags.get("optuna.trial", "")
        if number.isdigit():
            runs.setdefault(int(number), run)
    return runs


def _trial_tags(study, t, config_hash: str, owner: dict[str, int]) -> dict[str, Any]:
    """A run's tags as the trial would have set them at its start."""
    tags = {"optuna.study": study.study_name, "optuna.trial": t.number, "state": "RUNNING",
            "kind": t.user_attrs.get("kind", "ticket"), "config_hash": config_hash, "rebuilt_from_optuna": "true",
            **{f"search.{k}": v for k, v in t.params.items()}}
    lineage = t.user_attrs.get(LINEAGE_ATTR) or []
    if lineage:
        tags["retry_of"] = lineage[-1]
        if lineage[-1] in owner:
            tags["retry_of_trial"] = owner[lineage[-1]]
    return tags


class _Data:
    """The study's dataset, for the runs' Dataset column: loaded once, when a run lacks it (None if it cannot be)."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.loaded, self.data = cfg, False, None

    def get(self):
        if not self.loaded:
            self.loaded = True
            from ..engine.data import load_dataset

            try:
                self.data = load_dataset(self.cfg.base.data)
            except Exception:  # (its files are gone: the column stays empty, nothing else is lost)
                self.data = None
        return self.data


def _series(trial, seeds: list[int]) -> list[tuple[str, list[dict]]]:
    """(metric prefix, rounds) of every curve a trial's run holds: each seed's, its controls', the mean."""
    per_seed = trial.user_attrs.get("rounds_per_seed") or []
    controls = trial.user_attrs.get("controls_per_seed") or {}
    series: list[tuple[str, list[dict]]] = []
    for i, rounds in enumerate(per_seed):
        prefix = "" if len(seeds) == 1 else f"seed_{seeds[i]}/"
        series.append((prefix, rounds))
        series += [(f"{prefix}control/{name}/", levels[i][1:]) for name, levels in controls.items()
                   if i < len(levels)]
    finished = [r for r in per_seed if r]
    if len(seeds) > 1 and finished:
        series.append(("", mean_rounds(finished)))
    return series


def _sync_rounds(log: StudyLog, run_id: str, trial, seeds: list[int]) -> int:
    logged = 0
    for prefix, rounds in _series(trial, seeds):
        done = log.tracker.logged_steps(run_id, f"{prefix}val_accuracy")
        for rnd in rounds:
            if int(rnd["round"]) not in done:
                log.round(run_id, rnd, prefix)
                logged += 1
    finished = [r for r in trial.user_attrs.get("rounds_per_seed") or [] if r]
    if len(seeds) > 1 and finished:  # the dense network's instability at each k, mean over seeds (step = k)
        done = log.tracker.logged_steps(run_id, "dense_val_instability")
        for k, values in dense_instability_means(finished).items():
            if k not in done:
                log.tracker.log_metrics(run_id, values, step=k)
    return logged


def _sync_artifacts(log: StudyLog, run_id: str, trial, seeds: list[int]) -> int:
    """`rounds.csv`, `rounds.json` and the figure of a complete trial whose run lacks them; 1 if logged."""
    per_seed = trial.user_attrs.get("rounds_per_seed") or []
    finished = [r for r in per_seed if r]
    if not finished or "rounds.json" in log.tracker.artifact_names(run_id):
        return 0
    controls = trial.user_attrs.get("controls_per_seed") or {}
    log.trial_artifacts(run_id, trial.number, mean_rounds(finished), dict(zip(map(str, seeds), per_seed)),
                        {name: dict(zip(map(str, seeds), levels)) for name, levels in controls.items()})
    return 1


def _close_as_optuna_says(log: StudyLog, run_id: str, trial) -> None:
    attrs = trial.user_attrs
    if trial.state == TrialState.COMPLETE:
        state = "DIVERGED" if attrs.get("diverged") else "COMPLETE"
    else:
        state = "PRUNED" if trial.state == TrialState.PRUNED else "FAIL"
    log.end_trial(run_id, state, reason=attrs.get("fail_reason") or attrs.get("stop_reason") or None)


def _sync_pareto(log: StudyLog, study, runs: dict[int, Any]) -> None:
    """`pareto` true on the front's runs, false on every other complete trial's run."""
    best = {t.number for t in log.front(study)}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        run = runs.get(t.number)
        want = str(t.number in best).lower()
        if run is not None and run.data.tags.get("pareto") != want:
            log.tracker.set_tags(run.info.run_id, {"pareto": want})
    if sorted(best) != study.user_attrs.get(PARETO_ATTR):  # (nothing written that need not be: a full disk)
        study.set_user_attr(PARETO_ATTR, sorted(best))


def _sync_summary(log: StudyLog, study, parent: str, cfg: StudyConfig) -> int:
    """The study run's trial counts and files, when they are missing or behind the study; 1 if logged."""
    trials = study.get_trials(deepcopy=False)
    now = {"n_trials": len(trials), "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
           "n_pareto": len(log.front(study))}
    run = log.tracker.run(parent)
    files = {"summary.json", "round_frontier.json", "pareto.png"}
    if run.data.metrics == {**run.data.metrics, **now} and files <= log.tracker.artifact_names(parent):
        return 0
    log.study_summary(study, parent, cfg.study.epsilon)
    return 1

