"""Tables and plots of ticket-search results."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..engine.ticket import RoundResult


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain fixed-width table: right-aligned numbers, left-aligned text."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) if rows else False for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def round_table(rounds: Sequence[RoundResult]) -> str:
    headers = ["round", "density", "weights", "val_acc", "val_loss", "es_iter", "test_acc", "test_acc@es",
               "train_loss", "iters", "seconds"]
    rows = [[r.round, r.density, r.weights_remaining, r.val_accuracy, r.val_loss, r.early_stop_iteration,
             r.test_accuracy, r.test_accuracy_at_early_stop, r.train_loss, r.iterations, r.wall_seconds]
            for r in rounds]
    return format_table(headers, rows)


# --------------------------------------------------------------------------- study reports
# These read finished Optuna trials: user attrs "rounds" (mean over replicate
# seeds) and "params_all" (every searchable setting of the trial).

LABEL_KEYS = ("prune_rate", "rewind_iter", "scope", "reinit")


def _finished(trials: Sequence) -> list:
    from optuna.trial import TrialState

    return [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and t.user_attrs.get("rounds")]


def round_points(trials: Sequence) -> list[dict]:
    """Every (density, validation accuracy) of every round of every finished trial, labelled."""
    points = []
    for t in _finished(trials):
        settings = t.user_attrs.get("params_all", {})
        for r in t.user_attrs["rounds"]:
            points.append({"trial": t.number, "round": r["round"], "density": r["density"],
                           "val_accuracy": r["val_accuracy"], "test_accuracy": r.get("test_accuracy"),
                           **{k: settings.get(k) for k in LABEL_KEYS}})
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


def plot_rounds(rounds: Sequence[dict], path, title: str = "") -> None:
    """Validation and test accuracy against density for one trial (density falls to the right)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    dens = [r["density"] for r in rounds]
    ax.plot(dens, [r["val_accuracy"] for r in rounds], "o-", label="validation (early stop)")
    ax.plot(dens, [r["test_accuracy"] for r in rounds], "s--", alpha=0.7, label="test (end, reported only)")
    ax.axhline(rounds[0]["val_accuracy"], color="grey", lw=0.8, ls=":", label="dense validation")
    _density_axis(ax)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pareto(trials: Sequence, frontier: Sequence[dict], path, title: str = "") -> None:
    """All round points in grey, the non-dominated ones joined and labelled with their trial."""
    plt = _pyplot()
    points = round_points(trials)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if points:
        ax.scatter([p["density"] for p in points], [p["val_accuracy"] for p in points], s=12, c="lightgrey",
                   label="every round")
    if frontier:
        ax.plot([p["density"] for p in frontier], [p["val_accuracy"] for p in frontier], "o-", c="tab:red",
                label="non-dominated")
        labels: dict[tuple, list[str]] = {}  # identical points (duplicate trials) share one label
        for p in frontier:
            labels.setdefault((p["density"], p["val_accuracy"]), []).append(f"t{p['trial']}r{p['round']}")
        for xy, names in labels.items():
            ax.annotate(",".join(names), xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
    _density_axis(ax)
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "accuracy vs density")
    if points:  # (an empty legend is a matplotlib warning on stderr)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _density_axis(ax) -> None:
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density (fraction of weights remaining, log scale)")
    ax.grid(alpha=0.3)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- compare


def _order(key: tuple) -> tuple:
    """Sort numbers numerically, before text (so k = 20 comes before k = 100)."""
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in key)


def _mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def compare(trials: Sequence, by: Sequence[str], epsilon: float, density: float) -> list[dict]:
    """One row per combination of the `by` settings over finished trials.

    `seeds` counts the distinct training seeds behind a row: trials share seeds
    (replicate i always uses seed + i), so two trials with equal settings are
    repeats of one search, not independent samples.
    """
    from .objectives import accuracy_at_density, ticket_round

    groups: dict[tuple, list] = {}
    for t in _finished(trials):
        settings = t.user_attrs.get("params_all", {})
        groups.setdefault(tuple(settings.get(k) for k in by), []).append(t)
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        tickets = [ticket_round(t.user_attrs["rounds"], epsilon) for t in members]
        sp = _mean_std([1.0 - r["density"] for r in tickets])
        acc = _mean_std([r["val_accuracy"] for r in tickets])
        # Trials that never got down to `density` have no value there (not 0).
        at = _mean_std([accuracy_at_density(t.user_attrs["rounds"], density, missing=None) for t in members])
        it = _mean_std([float(sum(r["iterations"] for r in t.user_attrs["rounds"])) for t in members])
        rows.append({**dict(zip(by, key, strict=True)), "trials": len(members),
                     "seeds": len({s for t in members for s in t.user_attrs.get("seeds", [])}),
                     "ticket_sparsity": sp[0], "ticket_sparsity_std": sp[1],
                     "ticket_accuracy": acc[0], "ticket_accuracy_std": acc[1],
                     f"accuracy_at_{density:g}": at[0], f"accuracy_at_{density:g}_std": at[1],
                     "train_iterations": it[0], "train_iterations_std": it[1],
                     "trial_numbers": [t.number for t in members]})
    return rows


def compare_table(rows: Sequence[dict], by: Sequence[str], density: float) -> str:
    def pm(r: dict, key: str, digits: int = 3) -> str:
        m, s = r[key], r[f"{key}_std"]
        return "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"

    headers = [*by, "trials", "seeds", "ticket_sparsity", "ticket_accuracy", f"acc@density {density:g}",
               "train_iterations"]
    body = [[*(str(r[k]) for k in by), r["trials"], r["seeds"], pm(r, "ticket_sparsity"), pm(r, "ticket_accuracy"),
             pm(r, f"accuracy_at_{density:g}"), pm(r, "train_iterations", 0)] for r in rows]
    return format_table(headers, body)


def plot_compare(trials: Sequence, by: Sequence[str], path, title: str = "") -> None:
    """Grouped curves: mean validation accuracy against density, one line per setting combination."""
    plt = _pyplot()
    groups: dict[tuple, list] = {}
    for t in _finished(trials):
        settings = t.user_attrs.get("params_all", {})
        groups.setdefault(tuple(settings.get(k) for k in by), []).append(t.user_attrs["rounds"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, runs in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        n = max(len(r) for r in runs)
        xs, ys = [], []
        for i in range(n):  # average over the trials that reached round i
            at = [r[i] for r in runs if len(r) > i]
            xs.append(sum(p["density"] for p in at) / len(at))
            ys.append(sum(p["val_accuracy"] for p in at) / len(at))
        ax.plot(xs, ys, "o-", ms=3, label=", ".join(f"{k}={v}" for k, v in zip(by, key, strict=True)))
    _density_axis(ax)
    ax.set_ylabel("mean validation accuracy")
    ax.set_title(title or "accuracy vs density by setting")
    if groups:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
