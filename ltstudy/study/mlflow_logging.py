"""What a study logs to MLflow, decided here and nowhere else.

Layout: one experiment per study (opened on the Runs table), one parent run
per study, one child run per trial nested with an explicit parent run id.

- the study's run: the searched space and objectives as params; at the end
  the trial counts as metrics and `summary.json`, `round_frontier.json`,
  `pareto.png`; `report.html` when a report is written;
- a trial's run: tags (study, trial number, state, kind, config hash, the
  searched values, `pareto`, `retry_of`), the trial's whole engine config as
  params, every round's metrics with step = round (prefixed `seed_S/` when a
  trial has several seeds, whose mean is logged unprefixed), the objective
  and constraint values, `rounds.csv`, `rounds.json`,
  `accuracy_vs_density.png`, and saved tickets under `tickets/` and
  `ticket/`; it ends FINISHED (complete or diverged), KILLED (pruned) or
  FAILED, with its reason.

Optuna's storage is the record of truth; MLflow holds a copy for browsing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .attrs import EXPERIMENT_ATTR, PARENT_ATTR, RUN_ATTR
from .config import StudyConfig, describe
from .tracking import Tracker

ROUND_METRICS = ("density", "sparsity", "val_accuracy", "val_loss", "test_accuracy", "test_accuracy_at_early_stop",
                 "early_stop_iteration", "train_loss", "iterations", "weights_remaining", "reused",
                 "computed_iterations")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def rounds_csv(rounds: Iterable[Mapping[str, Any]]) -> str:
    rows = list(rounds)
    if not rows:
        return ""
    keys = [k for k in rows[0] if not isinstance(rows[0][k], dict)]
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    return "\n".join(lines) + "\n"


class StudyLog:
    """The study's MLflow runs, through one Tracker."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    # ------------------------------------------------------------------ the study's run

    def experiment(self, name: str) -> str:
        return self.tracker.experiment_id(name)

    def start_study(self, study, cfg: StudyConfig, experiment_id: str) -> str:
        parent = self.tracker.start_run(experiment_id, study.study_name,
                                        tags={"optuna.study": study.study_name, "study_file": cfg.path,
                                              "role": "study"})
        study.set_user_attr(PARENT_ATTR, parent)
        study.set_user_attr(EXPERIMENT_ATTR, experiment_id)
        self.tracker.log_params(parent, {"objectives": cfg.study.objectives, "sampler": cfg.study.sampler,
                                         "replicates": cfg.study.replicates, "epsilon": cfg.study.epsilon,
                                         **{f"search.{k}": describe(p) for k, p in cfg.search.items()}})
        return parent

    def reopen(self, run_id: str) -> bool:
        return self.tracker.reopen_run(run_id)

    def end_study(self, parent: str, status: str = "FINISHED", interrupted: bool = False) -> None:
        self.tracker.end_run(parent, status, reason="interrupted" if interrupted else None)

    def study_summary(self, study, parent: str, epsilon: float | None = None) -> None:
        from .frontier import pareto_trials, round_frontier
        from .plots import plot_pareto
        from .trial_results import trial_rows

        trials = study.get_trials(deepcopy=False)
        frontier = round_frontier(trials)
        self.tracker.log_metrics(parent, {"n_trials": len(trials),
                                          "n_complete": sum(t.state.name == "COMPLETE" for t in trials),
                                          "n_pareto": len(pareto_trials(study))})
        self.tracker.log_files(parent, {
            "summary.json": json.dumps(trial_rows(study), indent=2, default=str),
            "round_frontier.json": json.dumps(frontier, indent=2, default=str),
            "pareto.png": lambda path: plot_pareto(trials, frontier, path, title=study.study_name, epsilon=epsilon),
        })

    def report(self, parent: str, html: str) -> None:
        self.tracker.log_files(parent, {"report.html": html})

    # ------------------------------------------------------------------ a trial's run

    def start_trial(self, experiment_id: str, parent: str, trial, kind: str, config_hash: str,
                    values: dict[str, Any], retry_of: tuple[str, int | None] | None = None) -> str:
        tags = {"optuna.study": trial.study.study_name, "optuna.trial": trial.number, "state": "RUNNING",
                "kind": kind, "config_hash": config_hash, **{f"search.{k}": v for k, v in values.items()}}
        if retry_of is not None:
            tags.update({"retry_of": retry_of[0], "retry_of_trial": retry_of[1]})
        run_id = self.tracker.start_run(experiment_id, f"trial-{trial.number}", parent_run_id=parent, tags=tags)
        trial.set_user_attr(RUN_ATTR, run_id)
        return run_id

    def trial_params(self, run_id: str, config: dict[str, Any], extra: dict[str, Any]) -> None:
        self.tracker.log_params(run_id, {**flatten(config), **extra})

    def logged_rounds(self, run_ids: Sequence[str], key: str) -> set[int]:
        """Rounds (steps) already logged under `key` by any of these runs (a retry's lineage)."""
        steps: set[int] = set()
        for run_id in run_ids:
            steps |= self.tracker.logged_steps(run_id, key)
        return steps

    def round(self, run_id: str, rnd: Mapping[str, Any], prefix: str = "") -> None:
        values = {f"{prefix}{k}": float(rnd[k]) for k in ROUND_METRICS if k in rnd}
        if "density" in rnd:
            values[f"{prefix}sparsity"] = 1.0 - rnd["density"]
        self.tracker.log_metrics(run_id, values, step=int(rnd["round"]))

    def trial_values(self, run_id: str, objectives: dict[str, float], constraints: dict[str, float]) -> None:
        self.tracker.log_metrics(run_id, {f"objective.{k}": v for k, v in objectives.items()})
        self.tracker.log_metrics(run_id, {f"constraint.{k}": v for k, v in constraints.items()})

    def trial_artifacts(self, run_id: str, number: int, rounds: list[dict], per_seed: dict[str, list[dict]],
                        controls: dict[str, dict[str, list[dict]]] | None = None) -> None:
        from .plots import plot_rounds

        self.tracker.log_files(run_id, {
            "rounds.csv": rounds_csv(rounds),
            "rounds.json": json.dumps({"mean": rounds, "per_seed": per_seed, "controls": controls or {}}, indent=2),
            "accuracy_vs_density.png": lambda path: plot_rounds(rounds, path, title=f"trial {number}"),
        })

    def tickets(self, run_id: str, folder: str, seed: int) -> None:
        self.tracker.log_dir(run_id, folder, f"tickets/seed_{seed}")

    def exported_ticket(self, run_id: str, folder, name: str) -> None:
        self.tracker.log_dir(run_id, folder, f"ticket/{name}")

    def end_trial(self, run_id: str, state: str, reason: str | None = None, feasible: bool | None = None) -> None:
        """state: COMPLETE, DIVERGED (both FINISHED in MLflow), PRUNED (KILLED) or FAIL (FAILED)."""
        tags: dict[str, Any] = {"state": state}
        if feasible is not None:
            tags["feasible"] = feasible
        self.tracker.set_tags(run_id, tags)
        status = {"COMPLETE": "FINISHED", "DIVERGED": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED")
        self.tracker.end_run(run_id, status, reason=reason)

    def close_if_running(self, run_id: str, reason: str) -> bool:
        """Close a run a dead worker left RUNNING, as FAILED; whether it was."""
        if self.tracker.run_status(run_id) != "RUNNING":
            return False
        self.end_trial(run_id, "FAIL", reason)
        return True

    # ------------------------------------------------------------------ across trials

    def after_trial(self, study, trial) -> None:
        """A trial ended: only a complete one can change the Pareto front."""
        if trial.state.name == "COMPLETE":
            self.pareto(study)

    def pareto(self, study) -> None:
        """Tag the runs of the current Pareto-optimal trials pareto=true (and those that left the front false)."""
        from .attrs import PARETO_ATTR
        from .frontier import pareto_trials

        best = {t.number for t in pareto_trials(study)}
        before = set(study.user_attrs.get(PARETO_ATTR, []))
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for number in best ^ before:
            run_id = trials[number].user_attrs.get(RUN_ATTR) if number in trials else None
            if run_id:
                self.tracker.set_tags(run_id, {"pareto": str(number in best).lower()})
        study.set_user_attr(PARETO_ATTR, sorted(best))

    def sweep_orphans(self, study) -> int:
        """Close child runs left RUNNING whose Optuna trial is no longer running (a dead worker's)."""
        exp_id, parent = study.user_attrs.get(EXPERIMENT_ATTR), study.user_attrs.get(PARENT_ATTR)
        if not exp_id or not parent:
            return 0
        states = {t.number: t.state.name for t in study.get_trials(deepcopy=False)}
        closed = 0
        for run in self.tracker.child_runs(exp_id, parent, status="RUNNING"):
            number = run.data.tags.get("optuna.trial")
            state = states.get(int(number)) if number and number.isdigit() else None
            if state != "RUNNING":
                self.end_trial(run.info.run_id, "FAIL", "worker stopped before the trial finished")
                closed += 1
        return closed
