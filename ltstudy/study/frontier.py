"""Pareto-optimal trials and their MLflow tags."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from .attrs import PARETO_ATTR, RUN_ATTR
from .tracking import Tracker

# --------------------------------------------------------------------------- Pareto tags


class ParetoTagger:
    """After each trial, tag the MLflow runs of the current Pareto-optimal trials pareto=true."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:  # (nothing else can change the front)
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
    """Optuna's Pareto-optimal trials (feasible ones only), one per distinct setting.

    Repeats of a setting are skipped when they are proposed, so they are not
    trials; studies from before that rule may hold them, and the earliest one
    stands for its setting here.
    """
    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    if len(study.directions) == 1:
        try:
            best = [study.best_trial]
        except ValueError:  # no feasible trial
            return []
    else:
        best = study.best_trials
    from .sampling import setting_key

    seen: set[str] = set()
    out = []
    for t in sorted(best, key=lambda t: t.number):
        key = setting_key(t.params)
        if key not in seen and not t.user_attrs.get("diverged"):
            seen.add(key)
            out.append(t)
    return out


def _try(fn) -> None:
    try:
        fn()
    except Exception:
        pass
