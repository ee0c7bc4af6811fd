"""What a study logs to MLflow, decided here and nowhere else.

Layout: one experiment per study (opened on the Runs table), one parent run
per study, one child run per trial nested with an explicit parent run id.

- the study's run: the searched space and objectives as params; at the end
  the trial counts as metrics and `summary.json`, `round_frontier.json`,
  `pareto.png`; `report.html` when a report is written;
- a trial's run: tags (study, trial number, state, kind, config hash, the
  searched values, `feasible` and `pareto` once it is complete, `retry_of`),
  the trial's whole engine config as params, every number of every round
  (its fixed fields and every key of its open `metrics`, a plugin's too) with
  step = round (prefixed `seed_S/` when a trial has several seeds, whose mean
  is logged unprefixed; a control's under `control/NAME/`), the dense network's instability with step = k
  (`[stability] dense_ks`; with several seeds, each seed's prefixed and their
  mean unprefixed), the objective and constraint values,
  `rounds.csv`, `rounds.json`, `accuracy_vs_density.png`, and saved tickets
  under `tickets/` and `ticket/`; it ends FINISHED (complete or diverged),
  KILLED (pruned) or FAILED, with its reason. A retried trial's run holds
  every round of the trial (the ones it took from the cache too).

Optuna's storage is the record of truth; MLflow holds a copy for browsing.
So a tracking server that dies mid-study (or a full disk under the MLflow
store) stops nothing: the first failed call prints one line and the log goes
offline; training goes on and every result stays in Optuna's storage. With a
tracking server, each new trial and the study's end first ask whether it
answers again; when it does, logging resumes (one line). (A server that keeps
failing after it answered is asked less and less often: 30 s, then 60 s...)
`ltstudy repair` rebuilds what MLflow missed meanwhile from Optuna
(mlflow_sync.py).
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..engine import strict_json
from ..engine.callbacks import Callback
from ..engine.linear_paths import StartKind
from .attrs import EXPERIMENT_ATTR, PARENT_ATTR, PARETO_ATTR, RUN_ATTR
from .callbacks import StudyCallback
from .config import DEFAULT_MAX_DENSE_GAP, StudyConfig, describe
from .tracking import Tracker, TrackingUnavailable, one_line

RECONNECT_BACKOFF = 30.0  # seconds before asking again a server that failed after it had answered


def round_numbers(rnd: Mapping[str, Any]) -> dict[str, float]:
    """Every number of a stored round, its step (`round`) aside: the fixed fields and every metric (a flag as 0/1);
    a value not measured (NaN, infinite) is left out rather than drawn as a gap in MLflow's charts."""
    values = {k: float(v) for k, v in rnd.items()
              if k != "round" and isinstance(v, int | float) and math.isfinite(float(v))}
    if "density" in rnd:
        values["sparsity"] = 1.0 - rnd["density"]
    return values


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def rounds_csv(rounds: Iterable[Mapping[str, Any]]) -> str:
    """One row per round, a column for every key any round has (a metric measured on some rounds only is empty on
    the others); the per-layer densities as columns `layer_density/<layer>`."""
    rows = [{**{k: v for k, v in r.items() if not isinstance(v, dict | list) and k != "control"},
             **{f"layer_density/{n}": d for n, d in r.get("layer_density", {}).items()}} for r in rounds]
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    return "\n".join(lines) + "\n"


def dense_instability_means(per_seed: Sequence[Sequence[Mapping[str, Any]]]) -> dict[int, dict[str, float]]:
    """k -> {"dense_val_instability": mean, "dense_test_instability": mean} over the seeds' dense paths
    (`[stability] dense_ks`, held in each seed's round records)."""
    found: dict[int, list[Mapping[str, Any]]] = {}
    for rounds in per_seed:
        for rnd in rounds:
            for path in rnd.get("stability_paths") or []:
                if path["label"] == StartKind.DENSE:
                    found.setdefault(int(path["k"]), []).append(path)
    return {k: {f"dense_{split}_instability": sum(p[f"{split}_instability"] for p in paths) / len(paths)
                for split in ("val", "test")} for k, paths in sorted(found.items())}



def rounds_json(mean: list[dict], per_seed: Mapping[str, list[dict]],
                controls: Mapping[str, Mapping[str, list[dict]]] | None = None) -> str:
    """`rounds.json`: the mean over seeds, each seed's rounds, and each control's levels per seed."""
    def plain(rounds: list[dict]) -> list[dict]:  # (which curve a record is of, its key says)
        return [{k: v for k, v in r.items() if k != "control"} for r in rounds]

    return strict_json.dumps({"mean": plain(mean), "per_seed": {s: plain(r) for s, r in per_seed.items()},
                              "controls": {n: {s: plain(r) for s, r in by_seed.items()} for n, by_seed in
                                           (controls or {}).items()}}, indent=2)


def _quietly(fn: Callable | None = None, *, reconnect: bool = False) -> Callable:
    """A logging call that, when MLflow fails, takes the log offline (one line) instead of stopping the study.

    Offline, the call is skipped; one that begins something new (`reconnect`:
    a trial's run, the study's end) first asks whether the tracking server
    answers again, and if its call then goes through, the log is back online.
    """
    if fn is None:
        return functools.partial(_quietly, reconnect=reconnect)

    @functools.wraps(fn)
    def wrapper(self: StudyLog, *args, **kwargs):
        if args and args[0] is None:  # a run that was never created
            return None
        if self.strict:
            return fn(self, *args, **kwargs)
        retrying = self.offline is not None
        if retrying and not (reconnect and self._may_reconnect()):
            return None
        try:
            result = fn(self, *args, **kwargs)
        except Exception as exc:
            if not retrying:
                self.go_offline(exc)
            return None
        if retrying:
            self.back_online()
        return result
    return wrapper


class StudyLog:
    """The study's MLflow runs, through one Tracker; offline after the first failure (see the module docstring)."""

    def __init__(self, tracker: Tracker, notes: Callback | None = None, strict: bool = False,
                 max_dense_gap: float = DEFAULT_MAX_DENSE_GAP):
        self.tracker = tracker
        self.strict = strict  # a failure raises (`repair`: it exists to log what is missing, so it never skips)
        self.max_dense_gap = max_dense_gap  # [study].max_dense_gap: which trials the front it tags leaves out
        self.outages = 0
        self._next_try = 0.0  # (time.monotonic) no reconnection before
        self.offline: str | None = None  # why MLflow is not being written to, once it failed
        self.notes = notes if notes is not None else PrintedNotes()  # (its outages and returns, as they happen)

    def go_offline(self, exc: BaseException) -> None:
        from .storage import redact

        self.offline = exc.cause if isinstance(exc, TrackingUnavailable) else one_line(exc)
        self.outages += 1
        if self.outages > 1:  # it failed again after it had answered: ask less and less often
            self._next_try = time.monotonic() + min(RECONNECT_BACKOFF * 2 ** (self.outages - 2), 600.0)
        for name in ("mlflow", "alembic", "sqlalchemy"):  # its loggers would repeat the failure on every call left
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.notes.on_note(f"ltstudy: warning: MLflow at {redact(self.tracker.uri)} failed ({self.offline}); "
                           "training goes on and Optuna keeps every result: run `ltstudy repair STUDY.toml` once "
                           "MLflow is back to log what is missing")

    def _may_reconnect(self) -> bool:
        return time.monotonic() >= self._next_try and self.tracker.server_answers()

    def back_online(self) -> None:
        from .storage import redact

        self.offline = None
        self.notes.on_note(f"ltstudy: MLflow at {redact(self.tracker.uri)} answers again: logging goes on; "
                           "`ltstudy repair STUDY.toml` logs what it missed meanwhile")

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

    @_quietly(reconnect=True)
    def end_study(self, parent: str, status: str = "FINISHED", interrupted: bool = False) -> None:
        self.tracker.end_run(parent, status, reason="interrupted" if interrupted else None)

    @_quietly(reconnect=True)
    def study_summary(self, study, parent: str, epsilon: float | None = None) -> None:
        from .frontier import round_frontier
        from .plots import plot_pareto
        from .trial_results import trial_rows

        trials = study.get_trials(deepcopy=False)
        frontier = round_frontier(trials)
        self.tracker.log_metrics(parent, {"n_trials": len(trials),
                                          "n_complete": sum(t.state.name == "COMPLETE" for t in trials),
                                          "n_pareto": len(self.front(study))})
        self.tracker.log_files(parent, {
            "summary.json": strict_json.dumps(trial_rows(study), indent=2, default=str),
            "round_frontier.json": strict_json.dumps(frontier, indent=2, default=str),
            "pareto.png": lambda path: plot_pareto(trials, frontier, path, title=study.study_name, epsilon=epsilon),
        })

    @_quietly
    def report(self, parent: str, html: str) -> None:
        self.tracker.log_files(parent, {"report.html": html})

    # ------------------------------------------------------------------ a trial's run

    @_quietly(reconnect=True)
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

    @_quietly
    def round(self, run_id: str, rnd: Mapping[str, Any], prefix: str = "") -> None:
        values = {f"{prefix}{k}": v for k, v in round_numbers(rnd).items()}
        values.update({f"{prefix}layer_density/{n}": float(d) for n, d in rnd.get("layer_density", {}).items()})
        self.tracker.log_metrics(run_id, values, step=int(rnd["round"]))
        for path in rnd.get("stability_paths", []):  # ([stability] dense_ks: against k, where MLflow charts it)
            if path["label"] == StartKind.DENSE:
                self.tracker.log_metrics(run_id, {f"{prefix}dense_val_instability": path["val_instability"],
                                                  f"{prefix}dense_test_instability": path["test_instability"]},
                                         step=int(path["k"]))

    @_quietly
    def dense_means(self, run_id: str, per_seed: Sequence[Sequence[Mapping[str, Any]]]) -> None:
        """With several seeds: the dense network's instability at each k, mean over the seeds that measured it,
        unprefixed beside each seed's `seed_S/dense_*` (as every round metric's mean is)."""
        for k, values in dense_instability_means(per_seed).items():
            self.tracker.log_metrics(run_id, values, step=k)

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
            "rounds.json": rounds_json(rounds, per_seed, controls),
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
            self.pareto(study, trial if trial.state.name == "COMPLETE" else None)

    def pareto(self, study, trial=None) -> None:
        """Tag `pareto` true on the runs of the Pareto-optimal trials, false on those that left the front and on
        the run of `trial` (just complete) when it is not on it: every complete trial's run says which it is."""

        best = {t.number for t in self.front(study)}
        before = set(study.user_attrs.get(PARETO_ATTR, []))
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        for number in sorted(best ^ before | ({trial.number} if trial is not None else set())):
            run_id = trials[number].user_attrs.get(RUN_ATTR) if number in trials else None
            if run_id:
                self.tracker.set_tags(run_id, {"pareto": str(number in best).lower()})
        if best != before:  # (written only when it changed: `repair` on a full disk writes nothing it need not)
            study.set_user_attr(PARETO_ATTR, sorted(best))

    def front(self, study) -> list:
        """The Pareto-optimal trials, as every reader of the study sees them ([study].max_dense_gap)."""
        from .frontier import pareto_trials

        return pareto_trials(study, self.max_dense_gap)

    def sweep_orphans(self, study) -> int:
        """Close child runs left RUNNING whose Optuna trial is no longer running (a dead worker's).

        The runs are listed before the trials: a run is created after its
        trial started, so every run listed has a trial in the list that
        follows, and a live one is seen RUNNING. (Trials first let another
        worker start a trial and open its run in between, and that run was
        closed as FAIL.) A run closed by its worker since the listing is left alone.
        """
        exp_id, parent = study.user_attrs.get(EXPERIMENT_ATTR), study.user_attrs.get(PARENT_ATTR)
        if not exp_id or not parent:
            return 0
        running = self.tracker.child_runs(exp_id, parent, status="RUNNING")
        if not running:
            return 0
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        closed = 0
        for run in running:
            number = run.data.tags.get("optuna.trial")
            trial = trials.get(int(number)) if number and number.isdigit() else None
            state = trial.state.name if trial is not None else None
            if state == "RUNNING" or self.tracker.run_status(run.info.run_id) != "RUNNING":
                continue
            if state in ("COMPLETE", "PRUNED"):  # it finished; only MLflow missed the end (it was away)
                self.end_trial(run.info.run_id, "DIVERGED" if trial.user_attrs.get("diverged") else state,
                               "closed as Optuna recorded it (MLflow missed the end)")
            else:  # (the reason Optuna recorded, when the worker got that far: its own MLflow write may have failed)
                reason = trial.user_attrs.get("fail_reason") if trial is not None else None
                self.end_trial(run.info.run_id, "FAIL", reason or "worker stopped before the trial finished")
            closed += 1
        return closed


class PrintedNotes(Callback):
    """Notes printed to stderr as they come (MLflow going offline, and coming back)."""

    def on_note(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)


class ParetoTags(StudyCallback):
    """After each trial, the `pareto` tags of the runs whose trial joined or left the front (`StudyLog.after_trial`)."""

    def __init__(self, log: StudyLog, study):
        self.log, self.study = log, study

    def on_trial_end(self, trial) -> None:
        self.log.after_trial(self.study, trial)
