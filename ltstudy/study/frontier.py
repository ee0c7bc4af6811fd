"""Frontiers: Optuna's Pareto-optimal trials, and the round-level frontier of (density, accuracy) points."""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.trial import TrialState

from .sampling import setting_key
from .trial_results import LABEL_KEYS, finished, kind


def pareto_trials(study) -> list:
    """Optuna's Pareto-optimal trials (feasible ones only), one per distinct setting.

    A setting is evaluated once (sampling.NoRepeatSampler); where a study holds
    it twice (workers that sampled at one instant, or a study from before that
    rule), the earliest trial stands for it.
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
    seen: set[str] = set()
    out = []
    for t in sorted(best, key=lambda t: t.number):
        key = setting_key(t.params)
        if key not in seen and not t.user_attrs.get("diverged"):
            seen.add(key)
            out.append(t)
    return out


def round_points(trials: Sequence) -> list[dict]:
    """Every (density, validation accuracy) of every round of every finished trial, labelled."""
    points = []
    for t in finished(trials):
        settings = t.user_attrs.get("params_all", {})
        for r in t.user_attrs["rounds"]:
            points.append({"trial": t.number, "round": r["round"], "density": r["density"],
                           "val_accuracy": r["val_accuracy"], "test_accuracy": r.get("test_accuracy"),
                           "test_accuracy_at_early_stop": r.get("test_accuracy_at_early_stop"),
                           **{k: settings.get(k) for k in LABEL_KEYS}, "kind": kind(t)})
    return points


def non_dominated(points: Sequence[dict], x: str = "density", y: str = "val_accuracy") -> list[dict]:
    """Points no other point dominates (lower-or-equal x and higher-or-equal y, one strictly).

    Sweep by x ascending (y descending on ties): a point survives if its y beats
    every point at lower-or-equal x, or it duplicates the last survivor.
    """
    ordered = sorted(points, key=lambda p: (p[x], -p[y]))
    front: list[dict] = []
    best = -math.inf
    for p in ordered:
        if p[y] > best:
            front.append(p)
            best = p[y]
        elif front and p[x] == front[-1][x] and p[y] == front[-1][y]:
            front.append(p)
    return front


def round_frontier(trials: Sequence) -> list[dict]:
    return non_dominated(round_points(trials))
