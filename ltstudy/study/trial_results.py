"""Reading a study's trials: which count, what each one is, and its curves (one per seed).

Reports read finished Optuna trials through their user attrs: "rounds" (mean
over replicate seeds), "rounds_per_seed" (one list per seed; older trials lack
it), "seeds", "kind" ("ticket" or which control, recorded when the trial ran)
and "params_all" (every searchable setting of the trial).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .curves import TICKET, Curve

LABEL_KEYS = ("prune_rate", "rewind_iter", "scope", "reinit")


OUTCOMES = ("complete", "pruned", "diverged", "failed", "running")


def outcome(trial) -> str:
    """What became of a trial, one of OUTCOMES: a diverged trial is "diverged" whatever its state (Optuna holds it
    COMPLETE and infeasible); "running" is RUNNING or WAITING (queued)."""
    from optuna.trial import TrialState

    if trial.user_attrs.get("diverged"):
        return "diverged"
    return {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned",
            TrialState.FAIL: "failed"}.get(trial.state, "running")


def exclusion(trial) -> str | None:
    """Why a trial's rounds are left out of every report (its outcome, or "no rounds"); None if they count."""
    why = outcome(trial)
    if why not in ("complete", "pruned"):
        return why
    return None if trial.user_attrs.get("rounds") else "no rounds"


def finished(trials: Sequence) -> list:
    """COMPLETE trials and PRUNED ones with rounds; never diverged trials."""
    return [t for t in trials if exclusion(t) is None]


def census(trials: Sequence) -> dict[str, list[int]]:
    """Trial numbers by outcome; each trial in exactly one list."""
    out: dict[str, list[int]] = {k: [] for k in OUTCOMES}
    for t in trials:
        out[outcome(t)].append(t.number)
    return out


def kind(trial) -> str:
    """"ticket", or the control it is ("control: random re-init"), as the trial recorded it when it ran."""
    return trial.user_attrs.get("kind") or TICKET


def trial_curves(trial) -> list[Curve]:
    """A trial's curves: one per seed from `rounds_per_seed`, else its stored mean as one curve."""
    attrs = trial.user_attrs
    settings = attrs.get("params_all", {})
    seeds = list(attrs.get("seeds") or [None])
    per_seed = attrs.get("rounds_per_seed")
    label = kind(trial)
    if not per_seed:
        return [Curve(trial.number, seeds[0] if len(seeds) == 1 else tuple(seeds), settings, attrs["rounds"], label)]
    curves = [Curve(trial.number, seeds[i] if i < len(seeds) else f"#{i}", settings, rounds, label)
              for i, rounds in enumerate(per_seed) if rounds]
    kinds = attrs.get("controls", {})
    for name, levels in attrs.get("controls_per_seed", {}).items():
        curves += [Curve(trial.number, seeds[i] if i < len(seeds) else f"#{i}", settings, rounds,
                         kinds.get(name, f"control: {name}")) for i, rounds in enumerate(levels) if rounds]
    return curves


def row_keys(trials: Sequence, searched: Iterable[str] = ()) -> list[str]:
    """The settings that define a row: every searched setting, plus any other setting whose value differs
    between finished trials (in the order of params_all)."""
    searched = set(searched)
    order: list[str] = []
    values: dict[str, set] = {}
    for t in finished(trials):
        for k, v in t.user_attrs.get("params_all", {}).items():
            if k not in values:
                order.append(k)
                values[k] = set()
            values[k].add(repr(v))
    extra = [k for k in searched if k not in values]
    return [k for k in order if k in searched or len(values[k]) > 1] + sorted(extra)


@dataclass
class Curves:
    """The deduplicated curves of a study, and what was left out and why."""

    curves: list[Curve]
    keys: list[str]  # the settings that define a row
    repeats: list[tuple[int, int]] = field(default_factory=list)  # (trial, earlier trial it repeats: same
    # settings and seed, so the same curve; counted once)

    def key(self, c: Curve, names: Sequence[str] | None = None) -> tuple:
        return tuple(c.settings.get(k) for k in (self.keys if names is None else names))


def collect(trials: Sequence, searched: Iterable[str] = ()) -> Curves:
    """Every curve of every finished trial, once per (setting combination, kind, seed)."""
    done = sorted(finished(trials), key=lambda t: t.number)
    keys = row_keys(done, searched)
    seen: dict[tuple, int] = {}
    out = Curves([], keys)
    for t in done:
        for c in trial_curves(t):
            ident = (out.key(c), c.kind, repr(c.seed))
            if ident in seen:
                if seen[ident] != t.number and (t.number, seen[ident]) not in out.repeats:
                    out.repeats.append((t.number, seen[ident]))
                continue
            seen[ident] = t.number
            out.curves.append(c)
    return out


def trial_rows(study) -> list[dict]:
    """One row per trial: number, state, objective values, settings."""
    names = study.user_attrs.get("objectives") or [f"objective_{i}" for i in range(len(study.directions))]
    pareto = set(study.user_attrs.get("pareto_trials", []))
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values or []
        rows.append({"trial": t.number, "state": t.state.name, "pareto": t.number in pareto,
                     **{n: (values[i] if i < len(values) else None) for i, n in enumerate(names)},
                     **{k: t.user_attrs.get("params_all", {}).get(k, t.params.get(k)) for k in LABEL_KEYS},
                     "rounds": len(t.user_attrs.get("rounds", [])),
                     "reason": t.user_attrs.get("fail_reason") or t.user_attrs.get("stop_reason") or ""})
    return rows
