"""What a study logs to MLflow, decided here and nowhere else.

Layout: one experiment per study (opened on the Runs table), one parent run
per study, one child run per trial nested with an explicit parent run id.

- the study's run: the searched space and objectives as params; at the end
  the trial counts as metrics and `summary.json`, `round_frontier.json`,
  `pareto.png`; `report.html` when a report is written;
- a trial's run: tags (study, trial number, state, kind, config hash, the
  searched values, `pareto`, `retry_of`), the trial's whole engine config as
  params, every round's metrics with step = round (prefixed `seed_S/` when a
  trial has several seeds, whose mean is logged unprefixed), the dense
  network's instability with step = k (`[stability] dense_ks`), the objective
  and constraint values, `rounds.csv`, `rounds.json`,
  `accuracy_vs_density.png`, and saved tickets under `tickets/` and
  `ticket/`; it ends FINISHED (complete or diverged), KILLED (pruned) or
  FAILED, with its reason.

Optuna's storage is the record of truth; MLflow holds a copy for browsing.
So a tracking server that dies mid-study (or a full disk under the MLflow
store) stops nothing: the first failed call prints one line and the log goes
offline for the rest of the process; training goes on and every result stays
in Optuna's storage. `ltstudy repair` later rebuilds what MLflow is missing
from Optuna (`sync`): runs, parameters, every round's metrics, values, states.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .attrs import EXPERIMENT_ATTR, PARENT_ATTR, RUN_ATTR
from .config import DEFAULT_MAX_DENSE_GAP, StudyConfig, describe
from .tracking import Tracker

ROUND_METRICS = ("density", "sparsity", "val_accuracy", "val_loss", "test_accuracy", "test_accuracy_at_early_stop",
                 "start_test_accuracy", "early_stop_iteration", "train_loss", "iterations", "path_iterations",
                 "weights_remaining", "reused", "computed_iterations", "compression_ratio",
                 "compression_ratio_all_params", "params_nonzero", "dense_flops", "nonzero_flops",
                 "theoretical_speedup", "val_instability", "test_instability")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def rounds_csv(rounds: Iterable[Mapping[str, Any]]) -> str:
    """One row per round; the per-layer densities as columns `layer_density/<layer>`."""
    rows = [{**{k: v for k, v in r.items() if not isinstance(v, dict | list)},
             **{f"layer_density/{n}": d for n, d in r.get("layer_density", {}).items()}} for r in rounds]
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    return "\n".join(lines) + "\n"


def _quietly(fn: Callable) -> Callable:
    """A logging call that, when MLflow fails, takes the log offline (one line) instead of stopping the study."""

    @functools.wraps(fn)
    def wrapper(self: StudyLog, *args, **kwargs):
        if self.offline is not None or (args and args[0] is None):  # offline, or a run that was never created
            return None
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            self.go_offline(exc)
            return None
    return wrapper


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


class StudyLog:
    """The study's MLflow runs, through one Tracker; offline after the first failure (see the module docstring)."""

    def __init__(self, tracker: Tracker, notice: Callable[[str], None] | None = None,
                 max_dense_gap: float = DEFAULT_MAX_DENSE_GAP):
        self.tracker = tracker
        self.max_dense_gap = max_dense_gap  # [study].max_dense_gap: which trials the front it tags leaves out
        self.offline: str | None = None  # why MLflow is not being written to, once it failed
        self.notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))

    def go_offline(self, exc: BaseException) -> None:
        from .storage import redact

        self.offline = _one_line(exc)
        for name in ("mlflow", "alembic", "sqlalchemy"):  # its loggers would repeat the failure on every call left
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.notice(f"ltstudy: warning: MLflow at {redact(self.tracker.uri)} failed ({self.offline}); training "
                    "goes on and Optuna keeps every result: run `ltstudy repair STUDY.toml` once MLflow is back to "
                    "log what is missing")

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

    @_quietly
    def end_study(self, parent: str, status: str = "FINISHED", interrupted: bool = False) -> None:
        self.tracker.end_run(parent, status, reason="interrupted" if interrupted else None)

    @_quietly
    def study_summary(self, study, parent: str, epsilon: float | None = None) -> None:
        from .frontier import round_frontier
        from .plots import plot_pareto
        from .trial_results import trial_rows

        trials = study.get_trials(deepcopy=False)
        frontier = round_frontier(trials)
        self.tracker.log_metrics(parent, {"n_trials": len(trials),
                                          "n_complete": sum(t.state.name == "COMPLETE" for t in trials),
                                          "n_pareto": len(self._front(study))})
        self.tracker.log_files(parent, {
            "summary.json": json.dumps(trial_rows(study), indent=2, default=str),
            "round_frontier.json": json.dumps(frontier, indent=2, default=str),
            "pareto.png": lambda path: plot_pareto(trials, frontier, path, title=study.study_name, epsilon=epsilon),
        })

    @_quietly
    def report(self, parent: str, html: str) -> None:
        self.tracker.log_files(parent, {"report.html": html})

    # ------------------------------------------------------------------ a trial's run

    @_quietly
    def start_trial(self, experiment_id: str, parent: str, trial, kind: str, config_hash: str,
                    values: dict[str, Any], retry_of: tuple[str, int | None] | None = None) -> str | None:
        """The trial's run (None when MLflow is offline: `repair` creates it later)."""
        tags = {"optuna.study": trial.study.study_name, "optuna.trial": trial.number, "state": "RUNNING",
                "kind": kind, "config_hash": config_hash, **{f"search.{k}": v for k, v in values.items()}}
        if retry_of is not None:
            tags.update({"retry_of": retry_of[0], "retry_of_trial": retry_of[1]})
        run_id = self.tracker.start_run(experiment_id, f"trial-{trial.number}", parent_run_id=parent, tags=tags)
        trial.set_user_attr(RUN_ATTR, run_id)
        return run_id

    @_quietly
    def trial_params(self, run_id: str, config: dict[str, Any], extra: dict[str, Any]) -> None:
        self.tracker.log_params(run_id, {**flatten(config), **extra})

    def logged_rounds(self, run_ids: Sequence[str], key: str) -> set[int]:
        """Rounds (steps) already logged under `key` by any of these runs (a retry's lineage)."""
        steps: set[int] = set()
        for run_id in run_ids:
            try:
                steps |= self.tracker.logged_steps(run_id, key)
            except Exception:  # (a run that no longer exists logged nothing that counts)
                continue
        return steps

    @_quietly
    def round(self, run_id: str, rnd: Mapping[str, Any], prefix: str = "") -> None:
        # (a value not measured, NaN, is left out rather than drawn as a gap in MLflow's charts)
        values = {f"{prefix}{k}": float(rnd[k]) for k in ROUND_METRICS
                  if k in rnd and rnd[k] is not None and math.isfinite(float(rnd[k]))}
        if "density" in rnd:
            values[f"{prefix}sparsity"] = 1.0 - rnd["density"]
        values.update({f"{prefix}layer_density/{n}": float(d) for n, d in rnd.get("layer_density", {}).items()})
        self.tracker.log_metrics(run_id, values, step=int(rnd["round"]))
        for path in rnd.get("stability_paths", []):  # ([stability] dense_ks: against k, where MLflow charts it)
            if path["label"] == "dense":
                self.tracker.log_metrics(run_id, {f"{prefix}dense_val_instability": path["val_instability"],
                                                  f"{prefix}dense_test_instability": path["test_instability"]},
                                         step=int(path["k"]))

    @_quietly
    def dataset(self, run_id: str, data) -> None:
        """The data a trial trained on, in the runs table's Dataset column: name, digest and split sizes."""
        self.tracker.log_dataset(run_id, data.name, data.digest, data.name,
                                 {"train": len(data.train), "validation": len(data.val), "test": len(data.test),
                                  "input_shape": list(data.input_shape), "classes": data.num_classes})

    @_quietly
    def trial_values(self, run_id: str, objectives: dict[str, float], constraints: dict[str, float]) -> None:
        self.tracker.log_metrics(run_id, {f"objective.{k}": v for k, v in objectives.items()})
        self.tracker.log_metrics(run_id, {f"constraint.{k}": v for k, v in constraints.items()})

    @_quietly
    def trial_artifacts(self, run_id: str, number: int, rounds: list[dict], per_seed: dict[str, list[dict]],
                        controls: dict[str, dict[str, list[dict]]] | None = None) -> None:
        from .plots import plot_rounds

        self.tracker.log_files(run_id, {
            "rounds.csv": rounds_csv(rounds),
            "rounds.json": json.dumps({"mean": rounds, "per_seed": per_seed, "controls": controls or {}}, indent=2),
            "accuracy_vs_density.png": lambda path: plot_rounds(rounds, path, title=f"trial {number}"),
        })

    @_quietly
    def tickets(self, run_id: str, folder: str, seed: int) -> None:
        self.tracker.log_dir(run_id, folder, f"tickets/seed_{seed}")

    @_quietly
    def exported_ticket(self, run_id: str, folder, name: str) -> None:
        self.tracker.log_dir(run_id, folder, f"ticket/{name}")

    @_quietly
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

    @_quietly
    def after_trial(self, study, trial) -> None:
        """A trial ended: only a finished one can change the Pareto front (a pruned one by its dense network)."""
        if trial.state.name in ("COMPLETE", "PRUNED"):
            self.pareto(study)

    def pareto(self, study) -> None:
        """Tag the runs of the current Pareto-optimal trials pareto=true (and those that left the front false)."""
        from .attrs import PARETO_ATTR

        best = {t.number for t in self._front(study)}
        before = set(study.user_attrs.get(PARETO_ATTR, []))
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for number in best ^ before:
            run_id = trials[number].user_attrs.get(RUN_ATTR) if number in trials else None
            if run_id:
                self.tracker.set_tags(run_id, {"pareto": str(number in best).lower()})
        study.set_user_attr(PARETO_ATTR, sorted(best))

    def _front(self, study) -> list:
        from .frontier import pareto_trials

        return pareto_trials(study, self.max_dense_gap)

    def sweep_orphans(self, study) -> int:
        """Close child runs left RUNNING whose Optuna trial is no longer running (a dead worker's)."""
        exp_id, parent = study.user_attrs.get(EXPERIMENT_ATTR), study.user_attrs.get(PARENT_ATTR)
        if not exp_id or not parent:
            return 0
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        closed = 0
        for run in self.tracker.child_runs(exp_id, parent, status="RUNNING"):
            number = run.data.tags.get("optuna.trial")
            trial = trials.get(int(number)) if number and number.isdigit() else None
            state = trial.state.name if trial is not None else None
            if state == "RUNNING":
                continue
            if state in ("COMPLETE", "PRUNED"):  # it finished; only MLflow missed the end (it was away)
                self.end_trial(run.info.run_id, "DIVERGED" if trial.user_attrs.get("diverged") else state,
                               "closed as Optuna recorded it (MLflow missed the end)")
            else:  # (the reason Optuna recorded, when the worker got that far: its own MLflow write may have failed)
                reason = trial.user_attrs.get("fail_reason") if trial is not None else None
                self.end_trial(run.info.run_id, "FAIL", reason or "worker stopped before the trial finished")
            closed += 1
        return closed

    # ------------------------------------------------------------------ rebuilding MLflow from Optuna

    def sync(self, study, cfg: StudyConfig) -> dict[str, int]:
        """Log what MLflow is missing of a study, from Optuna's storage (the record of truth).

        For every trial that is no longer running: its run (created when there is none), its parameters, every
        round's metrics of every seed and control not yet logged, its objective and constraint values, and its
        final state. The study's run is created when missing and closed when no trial is running. Returns
        counts of runs created, rounds logged and runs closed.
        """
        from optuna.trial import TrialState

        counts = {"runs_created": 0, "rounds_logged": 0, "runs_closed": 0}
        trials = study.get_trials(deepcopy=False)
        exp_id = self.experiment(study.study_name)
        parent = study.user_attrs.get(PARENT_ATTR)
        if not parent or not self._exists(parent):
            parent = self.start_study(study, cfg, exp_id)
            counts["runs_created"] += 1
        by_number = {}
        for run in self.tracker.child_runs(exp_id, parent):
            number = run.data.tags.get("optuna.trial", "")
            if number.isdigit():
                by_number[int(number)] = run.info.run_id
        for t in trials:
            if t.state in (TrialState.RUNNING, TrialState.WAITING):
                continue
            run_id = t.user_attrs.get(RUN_ATTR)
            if not run_id or not self._exists(run_id):
                run_id = by_number.get(t.number)
            seeds = t.user_attrs.get("seeds") or [cfg.study.seed]
            tcfg = cfg.trial_config(t.params, seeds[0])
            if run_id is None:
                run_id = self.tracker.start_run(
                    exp_id, f"trial-{t.number}", parent_run_id=parent,
                    tags={"optuna.study": study.study_name, "optuna.trial": t.number, "state": "RUNNING",
                          "kind": t.user_attrs.get("kind", "ticket"), "config_hash": tcfg.hash(),
                          "rebuilt_from_optuna": "true", **{f"search.{k}": v for k, v in t.params.items()}})
                counts["runs_created"] += 1
            if "seeds" not in self.tracker.client.get_run(run_id).data.params:  # (MLflow was away when it began)
                self.tracker.log_params(run_id, {**flatten(tcfg.to_dict()), "seeds": seeds,
                                                 "replicates": len(seeds), "epsilon": cfg.study.epsilon})
            counts["rounds_logged"] += self._sync_rounds(run_id, t, seeds)
            if self.tracker.run_status(run_id) == "RUNNING":
                self._close_as_optuna_says(run_id, t, cfg)
                counts["runs_closed"] += 1
        if not any(t.state == TrialState.RUNNING for t in trials) and self.tracker.run_status(parent) == "RUNNING":
            self.tracker.end_run(parent, "FINISHED", reason="closed by ltstudy repair")
            counts["runs_closed"] += 1
        return counts

    def _exists(self, run_id: str) -> bool:
        try:
            run = self.tracker.client.get_run(run_id)
        except Exception:
            return False
        return run.info.lifecycle_stage != "deleted"

    def _sync_rounds(self, run_id: str, trial, seeds: list[int]) -> int:
        from .curves import mean_rounds

        per_seed = trial.user_attrs.get("rounds_per_seed") or []
        controls = trial.user_attrs.get("controls_per_seed") or {}
        series: list[tuple[str, list[dict]]] = []
        for i, rounds in enumerate(per_seed):
            prefix = "" if len(seeds) == 1 else f"seed_{seeds[i]}/"
            series.append((prefix, rounds))
            series += [(f"{prefix}control/{name}/", levels[i][1:]) for name, levels in controls.items()
                       if i < len(levels)]
        if len(seeds) > 1 and [r for r in per_seed if r]:
            series.append(("", mean_rounds([r for r in per_seed if r])))
        logged = 0
        for prefix, rounds in series:
            done = self.tracker.logged_steps(run_id, f"{prefix}val_accuracy")
            for rnd in rounds:
                if int(rnd["round"]) not in done:
                    self.round(run_id, rnd, prefix)
                    logged += 1
        return logged

    def _close_as_optuna_says(self, run_id: str, trial, cfg: StudyConfig) -> None:
        from optuna.trial import TrialState

        attrs = trial.user_attrs
        if trial.values:
            self.trial_values(run_id, {o.metric_key: v for o, v in zip(cfg.objectives, trial.values, strict=False)},
                              dict(trial.constraints or {}) if hasattr(trial, "constraints") else {})
        if trial.state == TrialState.COMPLETE:
            state = "DIVERGED" if attrs.get("diverged") else "COMPLETE"
        else:
            state = "PRUNED" if trial.state == TrialState.PRUNED else "FAIL"
        self.end_trial(run_id, state, reason=attrs.get("fail_reason") or attrs.get("stop_reason") or None)
