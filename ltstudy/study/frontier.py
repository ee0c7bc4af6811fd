"""Frontiers: the Pareto-optimal trials, and the round-level frontier of (density, accuracy) points.

The trial-level front is Optuna's (`study.best_trials`: complete, feasible
trials that no other dominates) computed over the trials that may stand on it:
never a diverged trial, nor an *undertrained* one, whose dense network is more
than `[study].max_dense_gap` below the study's best dense network (its tickets
only "match" a network that did not learn).

Being undertrained is judged here, when the front is read, and never stored in
a trial: it depends on every other trial, and a later trial with a better dense
network can flag an earlier one, so a flag (or constraint) told to Optuna when
the trial ended would go stale; Optuna's values and constraints stay what each
trial measured. Its samplers therefore do not see the flag, which only decides
the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from optuna.study import StudyDirection
from optuna.trial import TrialState

from .config import DEFAULT_MAX_DENSE_GAP
from .sampling import setting_key
from .trial_results import LABEL_KEYS, finished, kind


def undertrained(trials: Sequence, max_dense_gap: float = DEFAULT_MAX_DENSE_GAP) -> dict[int, tuple[float, float]]:
    """Trials whose dense network's validation accuracy is more than `max_dense_gap` below the study's best:
    {trial number: (its dense accuracy, the best)}. The best is over every finished trial (pruned and
    infeasible ones included: each trained a dense network)."""
    dense = {t.number: t.user_attrs["rounds"][0]["val_accuracy"] for t in finished(trials)}
    best = max(dense.values(), default=None)
    return {n: (d, best) for n, d in dense.items() if best is not None and best - d > max_dense_gap + 1e-12}


def feasible(trial) -> bool:
    return all(v <= 0.0 for v in (trial.constraints or {}).values())


def front_exclusions(trials: Sequence, max_dense_gap: float = DEFAULT_MAX_DENSE_GAP) -> dict[str, list[int]]:
    """Complete trials that may not stand on the front, by why: "diverged", "undertrained", "infeasible"."""
    flagged = undertrained(trials, max_dense_gap)
    out: dict[str, list[int]] = {"diverged": [], "undertrained": [], "infeasible": []}
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        if t.user_attrs.get("diverged"):
            out["diverged"].append(t.number)
        elif t.number in flagged:
            out["undertrained"].append(t.number)
        elif not feasible(t):
            out["infeasible"].append(t.number)
    return out


def pareto_trials(study, max_dense_gap: float = DEFAULT_MAX_DENSE_GAP) -> list:
    """The Pareto-optimal trials (see the module docstring), one per distinct setting.

    A setting is evaluated once (sampling.NoRepeatSampler); where a study holds
    it twice (workers that sampled at one instant, or a study from before that
    rule), the earliest trial stands for it.
    """
    trials = study.get_trials(deepcopy=False)
    left_out = {n for numbers in front_exclusions(trials, max_dense_gap).values() for n in numbers}
    candidates = [t for t in trials if t.state == TrialState.COMPLETE and t.number not in left_out]
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    losses = {t.number: [s * v for s, v in zip(signs, t.values, strict=True)] for t in candidates}
    if len(signs) == 1:  # Optuna's best trial: the best value (the earliest on a tie)
        best = sorted(candidates, key=lambda t: (losses[t.number], t.number))[:1]
    else:
        best = [t for t in candidates if not any(_dominates(losses[u.number], losses[t.number]) for u in candidates)]
    seen: set[str] = set()
    out = []
    for t in sorted(best, key=lambda t: t.number):
        key = setting_key(t.params)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a is at least as good as b in every objective and better in one (both minimised)."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def round_points(trials: Sequence) -> list[dict]:
    """Every (density, validation accuracy) of every round of every finished trial, labelled."""
    points = []
    for t in finished(trials):
        settings = t.user_attrs.get("params_all", {})
        for r in t.user_attrs["rounds"]:
            points.append({"trial": t.number, "round": r["round"], "density": r["density"],
                           "val_accuracy": r["val_accuracy"], "val_loss": r.get("val_loss"),
                           "test_accuracy": r.get("test_accuracy"),
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
