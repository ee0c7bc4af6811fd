"""`ltstudy compare`: one row per setting combination, with n, per-curve statistics and Welch's test.

Also the per-round and per-cell summaries the figures are drawn from. Every
number follows the definitions of curves.py and the objectives' classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .binning import BinLabel, Bins, binned, ranges
from .curves import READABLE_DENSITIES, TICKET, Curve, density_label
from .objectives import parse_objective
from .stats import ALPHA, Stat, distinguishable_text, welch
from .tables import format_table
from .trial_results import Curves, census, collect

ACCURACY_KEYS = {"val": "val_accuracy", "test": "test_accuracy_at_early_stop"}
SPLIT_NAMES = {"val": "validation accuracy at the early-stop iteration",
               "test": "test accuracy at the early-stop iteration"}
# Every comparison shows these; a study's other objectives are added after them.
SUMMARY_OBJECTIVES = ("ticket_sparsity", "ticket_accuracy", "theoretical_speedup", "train_iterations")
_TOL = 1e-9


def setting_order(key: tuple) -> tuple:
    """Sort numbers numerically and bins by place, before text (so k = 20 comes before k = 100)."""
    return tuple((0, v, "") if isinstance(v, int | float) else (0, v.index, "") if isinstance(v, BinLabel)
                 else (1, 0, str(v)) for v in key)


def density_grid(curves: Sequence[Curve], extra: Iterable[float] = ()) -> list[float]:
    """The readable densities (and `extra`) that at least one curve reaches, densest first."""
    if not curves:
        return []
    lowest = min(c.min_density() for c in curves)
    grid = {d for d in (*READABLE_DENSITIES, *extra) if d >= lowest * (1 - _TOL)}
    return sorted(grid, reverse=True)


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
    objectives: list[str] = field(default_factory=list)  # the study's objectives beyond SUMMARY_OBJECTIVES
    metrics: list[str] = field(default_factory=list)  # round numbers shown at each curve's ticket round (--metric)
    gaps: list[dict] = field(default_factory=list)  # each ticket minus each of its controls (control_gaps)
    bins: dict[str, Bins] = field(default_factory=dict)  # settings searched as ranges, and their bins

    @property
    def single(self) -> bool:
        """Every row rests on one curve: no cell has a spread, and the tables say so once instead of in each."""
        return bool(self.rows) and all(r["n"] <= 1 for r in self.rows)

    def to_json(self) -> dict:
        return {"by": self.by, "context": self.context, "split": self.split, "objectives": self.objectives,
                "metrics": {m: metric_key(m) for m in self.metrics},
                "accuracy": SPLIT_NAMES[self.split], "epsilon": self.epsilon,
                "interpolation": "linear in log density between each curve's rounds, never extrapolated",
                "grid": self.grid, "density": self.density, "rows": self.rows, "comparisons": self.notes,
                "ticket_minus_control": self.gaps,
                "bins": {k: {"edges": list(b.edges), "labels": list(b.labels), "n": list(b.counts)}
                         for k, b in self.bins.items()},
                "repeats_counted_once": [list(r) for r in self.repeats], "excluded": self.excluded}


def acc_key(d: float) -> str:
    return f"accuracy_at_{d:g}"


def metric_key(name: str) -> str:
    """A row's column of round number `name` at each curve's ticket round."""
    return f"ticket_{name}"


def round_numbers(curves: Iterable[Curve]) -> list[str]:
    """Every number the curves' rounds carry (their fixed fields and their metrics, a plugin's too), sorted."""
    return sorted({k for c in curves for r in c.rounds for k, v in r.items()
                   if k != "round" and isinstance(v, int | float) and not isinstance(v, bool)})


def compare(trials: Sequence, by: Sequence[str], epsilon: float, density: float | None = None,
            searched: Iterable[str] = (), split: str = "val", objectives: Sequence[str] = (),
            n_bins: int | None = None, metrics: Sequence[str] = ()) -> Comparison:
    """One row per combination of every searched setting (and any other setting that varies).

    `by` are the compared settings; the others are context. Each row has the
    ticket sparsity, ticket accuracy and training iterations of its curves, and
    the study's other `objectives`, each computed per curve by the objective's
    own class (on the `split` asked for) and then averaged. A setting searched as
    a range is binned (binning.py; `n_bins` quantile bins). n is the number of
    (setting combination, seed) curves behind a number: a trial with several
    seeds gives several curves, and two trials with the same settings and seed
    give the same curve, counted once. Ticket sparsity is computed per curve and
    then averaged, exactly as the objective does. Accuracies at densities are
    interpolated per curve (linear in log density, within the curve only). Each of `metrics` (a number of the
    rounds: `round_numbers`) is read at each curve's ticket round.
    """
    by = list(by)
    col = collect(trials, [*searched, *by])
    keys = [*by, *[k for k in col.keys if k not in by]]
    col.keys = keys
    # (bins and their n come from the tickets; each control shares its ticket's settings, so its bin)
    bins = ranges([c for c in col.curves if c.kind == TICKET] or col.curves, keys, n_bins)
    col.curves = binned(col.curves, bins)
    context = keys[len(by):]
    grid = density_grid(col.curves, [density] if density else [])
    acc = ACCURACY_KEYS[split]
    groups: dict[tuple, list[Curve]] = {}
    for c in col.curves:  # a ticket and its controls share their settings: the kind keeps them apart
        groups.setdefault((*col.key(c), c.kind), []).append(c)
    columns = [parse_objective(o) for o in dict.fromkeys([*SUMMARY_OBJECTIVES, *objectives])]
    rows = []
    for (*key, _), members in sorted(groups.items(), key=lambda kv: (setting_order(tuple(kv[0][:-1])),
                                                                     kv[0][-1] != TICKET, kv[0][-1])):
        per_curve = []
        for c in members:
            t = c.ticket(epsilon)
            per_curve.append({"trial": c.trial, "seed": c.seed, "ticket_round": t["round"],
                              "ticket_density": t["density"],
                              **{o.spec: o.value(c.rounds, epsilon, acc) for o in columns},
                              **{acc_key(d): c.at(d, acc) for d in grid},
                              **{metric_key(m): t.get(m) for m in metrics}})
        row: dict[str, Any] = {**dict(zip(keys, key, strict=True)), "kind": members[0].kind, "n": len(members),
                               "trials": sorted({c.trial for c in members}),
                               "seeds": sorted({str(c.seed) for c in members})}
        for name in (*(o.spec for o in columns), *(acc_key(d) for d in grid), *map(metric_key, metrics)):
            s = Stat.of(p[name] for p in per_curve)
            row.update({name: s.mean, f"{name}_std": s.std, f"{name}_n": s.n})
        row["curves"] = per_curve
        rows.append(row)
    notes = _pairwise(rows, by, context)
    census_ = census(trials)
    excluded = {k: census_[k] for k in ("diverged", "failed", "running") if census_[k]}
    extra = [o.spec for o in columns if o.spec not in SUMMARY_OBJECTIVES]
    return Comparison(rows, by, context, grid, split, epsilon, density, notes, col.repeats, excluded, extra,
                      list(metrics), control_gaps(rows, keys, grid, {(*col.key(c), c.kind, str(c.seed)): c
                                                                    for c in col.curves}, acc), bins)


def control_gaps(rows: Sequence[dict], keys: Sequence[str], grid: Sequence[float],
                 curves: Mapping[tuple, Curve] | None = None, acc: str = ACCURACY_KEYS["val"]) -> list[dict]:
    """Each ticket row against each of its controls (the same settings): ticket minus control accuracy at each
    grid density, per seed (paired: the same seed's ticket and control), with mean, std and n over seeds.

    With the rows' `curves` (by settings, kind and seed), also at the ticket's own round: each seed's ticket
    round against the same seed's control at that level (the same density, nothing interpolated), as
    `gap_at_ticket`, with the mean density of those rounds as `ticket_density`: the number `ltstudy run`'s
    summary gives beside the front, said the same way (`at_ticket_text`).
    """
    tickets = {tuple(r[k] for k in keys): r for r in rows if r["kind"] == TICKET}
    out = []
    for r in rows:
        ticket = tickets.get(tuple(r[k] for k in keys))
        if r["kind"] == TICKET or ticket is None:
            continue
        by_seed = {str(c["seed"]): c for c in ticket["curves"]}
        gap: dict[str, Any] = {**{k: r[k] for k in keys}, "control": r["kind"]}
        for d in grid:
            name = acc_key(d)
            diffs = [by_seed[str(c["seed"])][name] - c[name] for c in r["curves"]
                     if str(c["seed"]) in by_seed and c[name] is not None and by_seed[str(c["seed"])][name] is not None]
            st = Stat.of(diffs)
            gap.update({f"gap_{name}": st.mean, f"gap_{name}_std": st.std, f"gap_{name}_n": st.n})
        if curves is not None:
            where = tuple(r[k] for k in keys)
            at = [ticket_gap(curves[(*where, TICKET, seed)], curves[(*where, r["kind"], seed)],
                             by_seed[seed]["ticket_round"], acc)
                  for seed in (str(c["seed"]) for c in r["curves"]) if seed in by_seed]
            st = Stat.of(g for g, _ in at if g is not None)
            dens = [d for g, d in at if g is not None]
            gap.update({"gap_at_ticket": st.mean, "gap_at_ticket_std": st.std, "gap_at_ticket_n": st.n,
                        "ticket_density": sum(dens) / len(dens) if dens else None})
        out.append(gap)
    return out


def ticket_gap(ticket: Curve, control: Curve, round_: int, acc: str) -> tuple[float | None, float]:
    """Ticket minus control `acc` at the ticket's round (the control's level of the same index: the same mask
    density), and that density; None where the control has no such level or either value is missing."""
    t = ticket.rounds[round_]
    if round_ >= len(control.rounds) or t.get(acc) is None or control.rounds[round_].get(acc) is None:
        return None, t["density"]
    return t[acc] - control.rounds[round_][acc], t["density"]


def at_ticket_text(gap: Mapping[str, Any], spread: bool = True, show_n: bool = True) -> str:
    """'1.7 ± 0.3 (3) at 12.1%': ticket minus control in points at the ticket's round, and its density."""
    st = Stat(gap.get("gap_at_ticket"), gap.get("gap_at_ticket_std"), gap.get("gap_at_ticket_n", 0))
    if st.mean is None:
        return "n/a"
    return f"{st.text(100.0, 1, show_n=show_n, spread=spread)} at {density_label(gap['ticket_density'])}"


def row_label(row: Mapping[str, Any], names: Sequence[str]) -> str:
    """'p=0.2, k=100': a float from a searched range to 4 significant digits."""
    return ", ".join(f"{_short(k)}={row[k]:.4g}" if isinstance(row[k], float) else f"{_short(k)}={row[k]}"
                     for k in names)


def labelled_groups(col: Curves, curves: Sequence[Curve], most: int) -> tuple[list[tuple[str, list[Curve]]], str]:
    """`curves` grouped by setting combination, labelled ('p=0.2, k=100'), the `most` with the most curves first;
    and a sentence saying how many were left out ("" if none)."""
    groups: dict[tuple, list[Curve]] = {}
    for c in curves:
        groups.setdefault(col.key(c), []).append(c)
    shown = sorted(groups.items(), key=lambda kv: (-len(kv[1]), setting_order(kv[0])))[:most]
    lines = [(row_label(dict(zip(col.keys, key, strict=True)), col.keys) or "all trials", members)
             for key, members in shown]
    more = f" The {len(groups) - most} settings with the fewest curves are left out." if len(groups) > most else ""
    return lines, more


_SHORT = {"prune_rate": "p", "rewind_iter": "k"}


def _short(k: str) -> str:
    return _SHORT.get(k, k)


def kind_label(kind: str) -> str:
    """What a row's curves are, in a sentence: 'tickets', 'random mask controls'."""
    return "tickets" if kind == TICKET else f"{kind.removeprefix('control: ')} controls"


def _pairwise(rows: Sequence[dict], by: Sequence[str], context: Sequence[str]) -> list[dict]:
    """Welch's t-test on per-curve ticket sparsity between rows of one kind that differ only in the `by` settings;
    the tickets' pairs first, then each control's. Each note's text names its kind: a control's pair has the same
    settings as a ticket's, and would otherwise read the same."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((*(r[k] for k in context), r["kind"]), []).append(r)
    notes = []
    for (*ctx, kind), members in sorted(groups.items(), key=lambda kv: (kv[0][-1] != TICKET, kv[0][-1])):
        what = "ticket sparsity" if kind == TICKET else "their sparsity within ε"
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                va = [c["ticket_sparsity"] for c in a["curves"]]
                vb = [c["ticket_sparsity"] for c in b["curves"]]
                p = welch(va, vb)
                diff, verdict = distinguishable_text(len(va), len(vb), p)
                where = row_label(dict(zip(context, ctx, strict=True)), context)
                text = (f"{kind_label(kind)} {row_label(a, by)} vs {row_label(b, by)}"
                        + (f" ({where})" if where else "") + f": {what} {verdict}")
                notes.append({"a": {k: a[k] for k in by}, "b": {k: b[k] for k in by}, "kind": kind,
                              "context": dict(zip(context, ctx, strict=True)), "n_a": len(va), "n_b": len(vb),
                              "p": p, "distinguishable": diff, "text": text})
    return notes


def compare_table(cmp: Comparison) -> str:
    """The rows as a fixed-width table: percentages as 'mean ± std (n)'."""
    show_kind = any(r["kind"] != TICKET for r in cmp.rows)
    cols = [acc_key(d) for d in cmp.grid]
    headers = [*(_short(k) for k in cmp.by + cmp.context), *(["kind"] if show_kind else []), "n",
               "ticket sparsity %", "ticket acc %", *(f"acc@{density_label(d)}" for d in cmp.grid),
               "ticket speedup ×", "train iterations", *cmp.objectives, *(f"ticket {m}" for m in cmp.metrics)]
    body = []
    for r in cmp.rows:
        def st(name: str, scale: float = 100.0, digits: int = 1, r=r) -> str:
            return Stat(r[name], r[f"{name}_std"], r[f"{name}_n"]).text(scale, digits, spread=not cmp.single)

        body.append([*(str(r[k]) for k in cmp.by + cmp.context), *([r["kind"]] if show_kind else []), r["n"],
                     st("ticket_sparsity"), st("ticket_accuracy"), *(st(c) for c in cols),
                     st("theoretical_speedup", 1.0, 2), st("train_iterations", 1.0, 0),
                     *(st(o, 1.0, 4) for o in cmp.objectives), *(st(metric_key(m), 1.0, 4) for m in cmp.metrics)])
    return format_table(headers, body)


def gap_stat(gap: Mapping[str, Any], density: float) -> Stat:
    name = f"gap_{acc_key(density)}"
    return Stat(gap[name], gap[f"{name}_std"], gap[f"{name}_n"])


def gap_table(cmp: Comparison) -> str:
    """Ticket minus control at the ticket's round, then per density, paired by seed: one row per (settings,
    control)."""
    keys = cmp.by + cmp.context
    grid = [d for d in cmp.grid if d < 1.0]  # (at 100% both are the same dense round)
    headers = [*(_short(k) for k in keys), "control", "at ticket's round",
               *(f"gap@{density_label(d)}" for d in grid)]
    body = [[*(str(g[k]) for k in keys), g["control"].removeprefix("control: "), at_ticket_text(g, not cmp.single),
             *(gap_stat(g, d).text(100.0, 1, spread=not cmp.single) for d in grid)] for g in cmp.gaps]
    return format_table(headers, body)


MAX_NOTES = 24
ONE_CURVE = ("Every row rests on one curve (one trial, one seed: n = 1), so a cell is that curve's value, with no "
             "spread; n/a: the curve never reached that density. ")


def mean_only(cmp: Comparison) -> list[int]:
    """Trials with several seeds whose curve is their stored mean (older trials without rounds_per_seed)."""
    return sorted({c["trial"] for r in cmp.rows for c in r["curves"] if isinstance(c["seed"], tuple)})


def notes_text(notes: Sequence[dict]) -> list[str]:
    """The pairs that can be tested, one line each (at most MAX_NOTES); those that cannot, in one line."""
    tested = [n for n in notes if n["p"] is not None]
    untested = [n for n in notes if n["p"] is None]
    lines = []
    if tested:
        lines.append("Rows of one kind that differ only in the compared settings (Welch's t-test on per-curve ticket "
                     f"sparsity, distinguishable if p < {ALPHA}; no correction for multiple comparisons):")
        lines += [f"  {n['text']}" for n in tested[:MAX_NOTES]]
        if len(tested) > MAX_NOTES:
            lines.append(f"  ... and {len(tested) - MAX_NOTES} more pairs (all in --json)")
    if untested:
        kinds: dict[str, int] = {}
        for n in untested:
            kinds[kind_label(n["kind"])] = kinds.get(kind_label(n["kind"]), 0) + 1
        pairs = f"{len(untested)} {'pair' if len(untested) == 1 else 'pairs'} (" + ", ".join(
            f"{v} of {k}" for k, v in kinds.items()) + ")"
        lines.append(f"Not tested: {pairs} with one curve on a side (no seed-to-seed spread to test against; "
                     "every pair is in --json)." if tested else
                     f"No pair of rows can be tested: the {pairs} that differ only in the compared settings each have "
                     "one curve on a side (no seed-to-seed spread to test against); raise [study].replicates to 3 or "
                     "more. Every pair is in --json.")
    return lines


def compare_text(cmp: Comparison, name: str) -> str:
    """What `ltstudy compare` prints: a header that says what the numbers are, the table, the notes."""
    ctx = f"; context: {', '.join(cmp.context)}" if cmp.context else ""
    lines = [
        f"'{name}': one row per combination of the searched settings (compared: {', '.join(cmp.by)}{ctx}).",
        (ONE_CURVE if cmp.single else "n = (setting combination, seed) curves behind each number: mean ± sample "
         "std (n), '—' when n = 1. ")
        + f"Ticket = sparsest round within ε = {cmp.epsilon:g} of dense validation accuracy, per curve; its speedup "
        "is ShrinkBench's theoretical one (dense over non-zero multiply-adds per example).",
        f"Accuracy: {SPLIT_NAMES[cmp.split]}, in %; acc@X is interpolated linearly in log density between each "
        "curve's rounds (never extrapolated).",
        *(f"{b.describe()}." for b in cmp.bins.values()),
        *([f"ticket X: the rounds' number X at each curve's ticket round ({', '.join(cmp.metrics)})."]
          if cmp.metrics else []),
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
    if cmp.gaps:
        lines += ["", "Each ticket against its own controls (the same settings, trained at the ticket's levels): "
                      "ticket minus control accuracy in points, at the ticket's own round (its density given) and at "
                      "each density, paired by seed"
                      + (":" if cmp.single else ", mean ± std (n):"),
                  gap_table(cmp)]
    if cmp.notes:
        lines += ["", *notes_text(cmp.notes)]
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
    return sorted(set(values), key=lambda v: setting_order((v,)))


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
