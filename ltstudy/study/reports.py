"""Tables and statistics of ticket-search results (plots are in plots.py).

Neither this module nor plots.py imports torch: commands that only read a
study stay light. Numbers here follow the objective's definitions in
objectives.py exactly; where a report shows something else (an interpolated
accuracy, test instead of validation accuracy) it says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .objectives import ticket_round

if TYPE_CHECKING:
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


# --------------------------------------------------------------------------- which trials count
# Reports read finished Optuna trials: user attrs "rounds" (mean over replicate
# seeds), "rounds_per_seed" (one list per seed; older trials lack it),
# "seeds" and "params_all" (every searchable setting of the trial).

LABEL_KEYS = ("prune_rate", "rewind_iter", "scope", "reinit")
TICKET = "ticket"


def exclusion(trial) -> str | None:
    """Why a trial's rounds are left out of every report ("duplicate", "diverged", ...); None if they count."""
    from optuna.trial import TrialState

    attrs = trial.user_attrs
    if attrs.get("duplicate_of") is not None:
        return "duplicate"
    if attrs.get("diverged"):
        return "diverged"
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED):
        return trial.state.name.lower()
    if not attrs.get("rounds"):
        return "no rounds"
    return None


def _finished(trials: Sequence) -> list:
    """COMPLETE trials and PRUNED ones with rounds; never skipped repeats (duplicate_of) or diverged trials."""
    return [t for t in trials if exclusion(t) is None]


def census(trials: Sequence) -> dict[str, list[int]]:
    """Trial numbers by outcome; each trial in exactly one list."""
    from optuna.trial import TrialState

    out: dict[str, list[int]] = {k: [] for k in ("complete", "pruned", "diverged", "duplicate", "failed",
                                                 "running")}
    for t in trials:
        attrs = t.user_attrs
        if attrs.get("duplicate_of") is not None:
            out["duplicate"].append(t.number)
        elif attrs.get("diverged"):
            out["diverged"].append(t.number)
        elif t.state == TrialState.COMPLETE:
            out["complete"].append(t.number)
        elif t.state == TrialState.PRUNED:
            out["pruned"].append(t.number)
        elif t.state == TrialState.FAIL:
            out["failed"].append(t.number)
        else:
            out["running"].append(t.number)
    return out


def kind(settings: Mapping[str, Any]) -> str:
    """"ticket", or which control: a random re-initialisation (fresh θ'0) or a random mask."""
    controls = [name for name, hit in (("random re-init", settings.get("reinit") == "random"),
                                       ("random mask", settings.get("mask") == "random")) if hit]
    return "control: " + " + ".join(controls) if controls else TICKET


def is_control(settings: Mapping[str, Any]) -> bool:
    return kind(settings) != TICKET


# --------------------------------------------------------------------------- round-level frontier


def round_points(trials: Sequence) -> list[dict]:
    """Every (density, validation accuracy) of every round of every finished trial, labelled."""
    points = []
    for t in _finished(trials):
        settings = t.user_attrs.get("params_all", {})
        for r in t.user_attrs["rounds"]:
            points.append({"trial": t.number, "round": r["round"], "density": r["density"],
                           "val_accuracy": r["val_accuracy"], "test_accuracy": r.get("test_accuracy"),
                           "test_accuracy_at_early_stop": r.get("test_accuracy_at_early_stop"),
                           **{k: settings.get(k) for k in LABEL_KEYS}, "kind": kind(settings)})
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


# --------------------------------------------------------------------------- curves: the unit of replication

# Readable densities for tables and axes: 100%, 50%, 20%, 10%, ... Only those a study reaches are used.
READABLE_DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
ACCURACY_KEYS = {"val": "val_accuracy", "test": "test_accuracy_at_early_stop"}
SPLIT_NAMES = {"val": "validation accuracy at the early-stop iteration",
               "test": "test accuracy at the early-stop iteration"}
_TOL = 1e-9


@dataclass(frozen=True)
class Curve:
    """One ticket search: the rounds of one seed of one trial (the unit of replication).

    `seed` is a tuple when an older trial stored only the mean over its seeds.
    """

    trial: int
    seed: Any
    settings: Mapping[str, Any]
    rounds: Sequence[Mapping[str, Any]]

    @property
    def kind(self) -> str:
        return kind(self.settings)

    def ticket(self, epsilon: float) -> Mapping[str, Any]:
        return ticket_round(self.rounds, epsilon)

    def ticket_sparsity(self, epsilon: float) -> float:
        return 1.0 - self.ticket(epsilon)["density"]

    def train_iterations(self) -> float:
        return float(sum(r["iterations"] for r in self.rounds))

    def min_density(self) -> float:
        return min(r["density"] for r in self.rounds)

    def at(self, density: float, key: str) -> float | None:
        """`key` at `density`, linear in log density between the two rounds around it; None outside the curve."""
        return interpolate(self.rounds, density, key)


MAX_GAP = 2.5  # interpolate only between rounds at most this far apart in density (p = 0.6 per round is 2.5x)


def interpolate(rounds: Sequence[Mapping[str, Any]], density: float, key: str) -> float | None:
    """Linear in log density between consecutive rounds; None if `density` is outside their range (no
    extrapolation) or between two rounds more than MAX_GAP apart in density (one-shot pruning's dense round and
    its one pruned round: nothing was measured in between). A round exactly at `density` gives its own value."""
    pts = [(r["density"], r[key]) for r in rounds if r.get(key) is not None and r["density"] > 0]
    if not pts:
        return None
    for d, v in pts:
        if abs(d - density) <= _TOL * max(1.0, density):
            return float(v)
    x = math.log(density)
    for (d0, v0), (d1, v1) in itertools.pairwise(pts):
        lo, hi = sorted((d0, d1))
        if lo < density < hi:
            if hi / lo > MAX_GAP:
                return None
            x0, x1 = math.log(d0), math.log(d1)
            return float(v0 + (v1 - v0) * (x - x0) / (x1 - x0))
    return None


def trial_curves(trial) -> list[Curve]:
    """A trial's curves: one per seed from `rounds_per_seed`, else its stored mean as one curve."""
    attrs = trial.user_attrs
    settings = attrs.get("params_all", {})
    seeds = list(attrs.get("seeds") or [None])
    per_seed = attrs.get("rounds_per_seed")
    if per_seed:
        return [Curve(trial.number, seeds[i] if i < len(seeds) else f"#{i}", settings, rounds)
                for i, rounds in enumerate(per_seed) if rounds]
    return [Curve(trial.number, seeds[0] if len(seeds) == 1 else tuple(seeds), settings, attrs["rounds"])]


def row_keys(trials: Sequence, searched: Iterable[str] = ()) -> list[str]:
    """The settings that define a row: every searched setting, plus any other setting whose value differs
    between finished trials (in the order of params_all)."""
    searched = set(searched)
    order: list[str] = []
    values: dict[str, set] = {}
    for t in _finished(trials):
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
    """Every curve of every finished trial, once per (setting combination, seed)."""
    finished = sorted(_finished(trials), key=lambda t: t.number)
    keys = row_keys(finished, searched)
    seen: dict[tuple, int] = {}
    out = Curves([], keys)
    for t in finished:
        for c in trial_curves(t):
            ident = (out.key(c), repr(c.seed))
            if ident in seen:
                if seen[ident] != t.number and (t.number, seen[ident]) not in out.repeats:
                    out.repeats.append((t.number, seen[ident]))
                continue
            seen[ident] = t.number
            out.curves.append(c)
    return out


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for n < 2) and n of some per-curve values."""

    mean: float | None
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat:
        xs = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not xs:
            return cls(None, None, 0)
        m = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        return cls(m, sd, len(xs))

    def ci95(self) -> float | None:
        """Half-width of the 95% t-interval of the mean; None for n < 2."""
        if self.std is None or self.n < 2:
            return None
        from scipy.stats import t

        return float(t.ppf(0.975, self.n - 1) * self.std / math.sqrt(self.n))

    def text(self, scale: float = 100.0, digits: int = 1, show_n: bool = True) -> str:
        """'59.0 ± 1.2 (3)'; '59.0 ± — (1)' when there is no spread; 'n/a (0)' when there is no value."""
        if self.mean is None:
            return "n/a (0)" if show_n else "n/a"
        spread = "—" if self.std is None else f"{self.std * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {spread}" + (f" ({self.n})" if show_n else "")


def welch(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's t-test p-value (two-sided, unequal variances); None when either side has n < 2.

    Both sides without spread: p = 1 if the values are equal, else 0.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = Stat.of(a), Stat.of(b)
    if not sa.std and not sb.std:
        return 1.0 if math.isclose(sa.mean, sb.mean, abs_tol=1e-12) else 0.0  # type: ignore[arg-type]
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # (one side without spread: scipy warns of precision loss, the test holds)
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_ind(a, b, equal_var=False).pvalue)


ALPHA = 0.05


def distinguishable_text(na: int, nb: int, p: float | None) -> tuple[bool, str]:
    ns = f"n = {na}" if na == nb else f"n = {na} and {nb}"
    if p is None:
        return False, f"not distinguishable at {ns} (no seed-to-seed spread to test against)"
    if p >= ALPHA:
        return False, f"not distinguishable at {ns} (p = {p:.2g})"
    if p == 0.0:  # (welch: neither side varies across seeds, and the values differ)
        return True, f"differ at {ns} (every seed gives the same value on each side)"
    return True, f"differ at {ns} (p {'< 0.001' if p < 1e-3 else f'= {p:.2g}'})"


# --------------------------------------------------------------------------- compare


def _order(key: tuple) -> tuple:
    """Sort numbers numerically, before text (so k = 20 comes before k = 100)."""
    return tuple((0, v, "") if isinstance(v, int | float) else (1, 0, str(v)) for v in key)


def density_grid(curves: Sequence[Curve], extra: Iterable[float] = ()) -> list[float]:
    """The readable densities (and `extra`) that at least one curve reaches, densest first."""
    if not curves:
        return []
    lowest = min(c.min_density() for c in curves)
    grid = {d for d in (*READABLE_DENSITIES, *extra) if d >= lowest * (1 - _TOL)}
    return sorted(grid, reverse=True)


def density_label(d: float) -> str:
    """0.2 -> '20%', 0.005 -> '0.5%'."""
    return f"{d * 100:.3g}%"


@dataclass
class Comparison:
    """Rows of `compare`, with what the rows are made of and the pairwise notes."""

    rows: list[dict]
    by: list[str]
    context: list[str]
    grid: list[float]
    split: str
    epsilon: float
    density: float | None
    notes: list[dict]
    repeats: list[tuple[int, int]]
    excluded: dict[str, list[int]]

    def to_json(self) -> dict:
        return {"by": self.by, "context": self.context, "split": self.split,
                "accuracy": SPLIT_NAMES[self.split], "epsilon": self.epsilon,
                "interpolation": "linear in log density between each curve's rounds, never extrapolated",
                "grid": self.grid, "density": self.density, "rows": self.rows, "comparisons": self.notes,
                "repeats_counted_once": [list(r) for r in self.repeats], "excluded": self.excluded}


def acc_key(d: float) -> str:
    return f"accuracy_at_{d:g}"


def compare(trials: Sequence, by: Sequence[str], epsilon: float, density: float | None = None,
            searched: Iterable[str] = (), split: str = "val") -> Comparison:
    """One row per combination of every searched setting (and any other setting that varies).

    `by` are the compared settings; the others are context. n is the number of
    (setting combination, seed) curves behind a number: a trial with several
    seeds gives several curves, and two trials with the same settings and seed
    give the same curve, counted once. Ticket sparsity is computed per curve and
    then averaged, exactly as the objective does. Accuracies at densities are
    interpolated per curve (linear in log density, within the curve only).
    """
    by = list(by)
    col = collect(trials, [*searched, *by])
    keys = [*by, *[k for k in col.keys if k not in by]]
    col.keys = keys
    context = keys[len(by):]
    grid = density_grid(col.curves, [density] if density else [])
    acc = ACCURACY_KEYS[split]
    groups: dict[tuple, list[Curve]] = {}
    for c in col.curves:
        groups.setdefault(col.key(c), []).append(c)
    rows = []
    for key, members in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        per_curve = []
        for c in members:
            t = c.ticket(epsilon)
            per_curve.append({"trial": c.trial, "seed": c.seed, "ticket_round": t["round"],
                              "ticket_density": t["density"], "ticket_sparsity": 1.0 - t["density"],
                              "ticket_accuracy": t.get(acc), "train_iterations": c.train_iterations(),
                              **{acc_key(d): c.at(d, acc) for d in grid}})
        row: dict[str, Any] = {**dict(zip(keys, key, strict=True)), "kind": members[0].kind, "n": len(members),
                               "trials": sorted({c.trial for c in members}),
                               "seeds": sorted({str(c.seed) for c in members})}
        for name in ("ticket_sparsity", "ticket_accuracy", "train_iterations", *(acc_key(d) for d in grid)):
            s = Stat.of(p[name] for p in per_curve)
            row.update({name: s.mean, f"{name}_std": s.std, f"{name}_n": s.n})
        row["curves"] = per_curve
        rows.append(row)
    notes = _pairwise(rows, by, context)
    census_ = census(trials)
    excluded = {k: census_[k] for k in ("diverged", "duplicate", "failed", "running") if census_[k]}
    return Comparison(rows, by, context, grid, split, epsilon, density, notes, col.repeats, excluded)


def row_label(row: Mapping[str, Any], names: Sequence[str]) -> str:
    return ", ".join(f"{_short(k)}={row[k]}" for k in names)


_SHORT = {"prune_rate": "p", "rewind_iter": "k"}


def _short(k: str) -> str:
    return _SHORT.get(k, k)


def _pairwise(rows: Sequence[dict], by: Sequence[str], context: Sequence[str]) -> list[dict]:
    """Welch's t-test on per-curve ticket sparsity between rows that differ only in the `by` settings."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in context), []).append(r)
    notes = []
    for ctx, members in groups.items():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                va = [c["ticket_sparsity"] for c in a["curves"]]
                vb = [c["ticket_sparsity"] for c in b["curves"]]
                p = welch(va, vb)
                diff, verdict = distinguishable_text(len(va), len(vb), p)
                where = row_label(dict(zip(context, ctx, strict=True)), context)
                text = (f"{row_label(a, by)} vs {row_label(b, by)}" + (f" ({where})" if where else "")
                        + f": ticket sparsity {verdict}")
                notes.append({"a": {k: a[k] for k in by}, "b": {k: b[k] for k in by},
                              "context": dict(zip(context, ctx, strict=True)), "n_a": len(va), "n_b": len(vb),
                              "p": p, "distinguishable": diff, "text": text})
    return notes


def compare_table(cmp: Comparison) -> str:
    """The rows as a fixed-width table: percentages as 'mean ± std (n)'."""
    show_kind = any(r["kind"] != TICKET for r in cmp.rows)
    cols = [acc_key(d) for d in cmp.grid]
    headers = [*(_short(k) for k in cmp.by + cmp.context), *(["kind"] if show_kind else []), "n",
               "ticket sparsity %", "ticket acc %", *(f"acc@{density_label(d)}" for d in cmp.grid),
               "train iterations"]
    body = []
    for r in cmp.rows:
        def st(name: str, scale: float = 100.0, digits: int = 1, r=r) -> str:
            return Stat(r[name], r[f"{name}_std"], r[f"{name}_n"]).text(scale, digits)

        body.append([*(str(r[k]) for k in cmp.by + cmp.context), *([r["kind"]] if show_kind else []), r["n"],
                     st("ticket_sparsity"), st("ticket_accuracy"), *(st(c) for c in cols),
                     st("train_iterations", 1.0, 0)])
    return format_table(headers, body)


MAX_NOTES = 24


def mean_only(cmp: Comparison) -> list[int]:
    """Trials with several seeds whose curve is their stored mean (older trials without rounds_per_seed)."""
    return sorted({c["trial"] for r in cmp.rows for c in r["curves"] if isinstance(c["seed"], tuple)})


def compare_text(cmp: Comparison, name: str) -> str:
    """What `ltstudy compare` prints: a header that says what the numbers are, the table, the notes."""
    ctx = f"; context: {', '.join(cmp.context)}" if cmp.context else ""
    lines = [
        f"'{name}': one row per combination of the searched settings (compared: {', '.join(cmp.by)}{ctx}).",
        f"n = (setting combination, seed) curves behind each number: mean ± sample std (n), '—' when n = 1. "
        f"Ticket = sparsest round within ε = {cmp.epsilon:g} of dense validation accuracy, per curve.",
        f"Accuracy: {SPLIT_NAMES[cmp.split]}, in %; acc@X is interpolated linearly in log density between each "
        "curve's rounds (never extrapolated).",
        "",
        compare_table(cmp) if cmp.rows else "(no finished trials)",
    ]
    pooled = mean_only(cmp)
    if pooled:
        lines.append(f"trials {', '.join(map(str, pooled))} stored only their mean over seeds (no rounds_per_seed): "
                     "each counts as one curve, n = 1")
    if cmp.repeats:
        lines.append("counted once (same settings and seed as an earlier trial): "
                     + ", ".join(f"trial {a} = trial {b}" for a, b in cmp.repeats))
    if cmp.excluded:
        lines.append("not averaged: " + "; ".join(f"{k} trials {', '.join(map(str, v))}"
                                                  for k, v in cmp.excluded.items()))
    if cmp.notes:
        lines.append("")
        lines.append("Rows that differ only in the compared settings (Welch's t-test on per-curve ticket sparsity, "
                     f"distinguishable if p < {ALPHA}; no correction for multiple comparisons):")
        lines += [f"  {n['text']}" for n in cmp.notes[:MAX_NOTES]]
        if len(cmp.notes) > MAX_NOTES:
            lines.append(f"  ... and {len(cmp.notes) - MAX_NOTES} more pairs (all in --json)")
    return "\n".join(lines)


# --------------------------------------------------------------------------- per-round and per-cell summaries


def round_stats(curves: Sequence[Curve], key: str) -> list[dict]:
    """Per round index over curves (of one setting combination): mean density, mean, std, 95% t-interval, n."""
    out = []
    depth = max((len(c.rounds) for c in curves), default=0)
    for i in range(depth):
        at = [c.rounds[i] for c in curves if len(c.rounds) > i and c.rounds[i].get(key) is not None]
        if not at:
            continue
        s = Stat.of(r[key] for r in at)
        out.append({"round": i, "density": sum(r["density"] for r in at) / len(at), "mean": s.mean,
                    "std": s.std, "ci95": s.ci95(), "n": s.n})
    return out


def levels(values: Iterable[Any]) -> list[Any]:
    return sorted(set(values), key=lambda v: _order((v,)))


def cell_table(curves: Sequence[Curve], x: str, y: str, value) -> dict[tuple, Stat]:
    """Stat of `value(curve)` for each (x, y) setting pair."""
    cells: dict[tuple, list] = {}
    for c in curves:
        cells.setdefault((c.settings.get(x), c.settings.get(y)), []).append(value(c))
    return {k: Stat.of(v) for k, v in cells.items()}


def pooled_settings(curves: Sequence[Curve], keys: Sequence[str], held: Sequence[str]) -> dict[str, list]:
    """The row-defining settings other than `held` that take more than one value among `curves`."""
    out = {}
    for k in keys:
        if k in held:
            continue
        vals = levels(c.settings.get(k) for c in curves)
        if len(vals) > 1:
            out[k] = vals
    return out


# --------------------------------------------------------------------------- plots (moved to plots.py)
# The runner and the objective import these two from here.


def plot_rounds(rounds: Sequence[dict], path, title: str = "", epsilon: float | None = None) -> None:
    from .plots import plot_rounds as plot

    plot(rounds, path, title=title, epsilon=epsilon)


def plot_pareto(trials: Sequence, frontier: Sequence[dict], path, title: str = "",
                epsilon: float | None = None) -> None:
    from .plots import plot_pareto as plot

    plot(trials, frontier, path, title=title, epsilon=epsilon)


def bins(values: Iterable[Any], max_levels: int = 8, n_bins: int = 5) -> tuple[list[str], Any] | None:
    """For a numeric setting with more than `max_levels` distinct values (a searched range): equal-width bins
    as (labels in order, value -> label). None when the values can be shown as they are."""
    vals = levels(values)
    if len(vals) <= max_levels or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return None
    lo, hi = float(vals[0]), float(vals[-1])
    edges = [lo + (hi - lo) * i / n_bins for i in range(n_bins + 1)]
    labels = [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(n_bins)]

    def label(v: float) -> str:
        return labels[min(n_bins - 1, int((float(v) - lo) / (hi - lo) * n_bins))]

    return labels, label
