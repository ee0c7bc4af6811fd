"""The report's first sections: what was searched, the recommendation, the Pareto front and the frontier."""

from __future__ import annotations

from collections.abc import Sequence

from .. import plots
from ..binning import Bins
from ..compare import Comparison, at_ticket_text, row_label
from ..curves import TICKET
from ..frontier import round_frontier
from ..stats import Stat, distinguishable_text, welch
from ..trial_results import Curves, kind
from .html import describe_param, e, figure, fmt, missing, pct, setting, stat_cell, table

COUNT_LABELS = {"complete": "finished (complete)", "pruned": "pruned or stopped early (rounds kept)",
                "diverged": "diverged (counted, never averaged)", "failed": "failed", "running": "running or queued"}


def section_setup(cfg, names: Sequence[str], counts: dict[str, list[int]]) -> str:
    search = table(["setting", "how", "values"], [[k, *describe_param(p)] for k, p in cfg.search.items()],
                   table_id="searched")
    objectives = "".join(f"<li><b>{e(n)}</b> ({e(o.direction)}): {e(o.meaning)}</li>"
                         for n, o in zip(names, cfg.objectives))
    rows = [[COUNT_LABELS[k], len(v), ", ".join(map(str, v[:30])) + (" …" if len(v) > 30 else "")]
            for k, v in counts.items()]
    controls = (f"<p>Controls beside every ticket, level by level on its own masks: "
                f"{e(', '.join(cfg.study.controls))}.</p>" if cfg.study.controls else "")
    return (
        "<h2>What was searched</h2>" + search
        + f"<p>Objectives:</p><ul>{objectives}</ul>" + controls
        + f"<p>ε = {cfg.study.epsilon:g}: a round <i>matches</i> if its validation accuracy is at least its own "
          f"dense round's minus ε. Seeds per trial: {cfg.study.replicates} (replicate i trains with seed "
          f"{cfg.study.seed} + i). Sampler: {e(cfg.study.sampler)}.</p>"
        + table(["trials", "count", "numbers"], rows, table_id="trial-counts", numeric=[False, True, False]))


def row_of(cmp: Comparison, trial) -> dict | None:
    """The ticket row of `compare` that holds a trial (its settings binned as the rows are)."""
    settings = trial.user_attrs.get("params_all", {})
    key = tuple(binned_value(cmp.bins.get(k), settings.get(k)) for k in cmp.by + cmp.context)
    for r in cmp.rows:
        if r["kind"] == kind(trial) and tuple(r[k] for k in cmp.by + cmp.context) == key:
            return r
    return None


def said(r: dict, name: str, scale: float = 100.0, digits: int = 1, unit: str = " %") -> str:
    """'97.8 ± 0.4 % (n = 3)'; for a row of one curve, '97.8 %' (the page says n = 1 once)."""
    st = Stat(r[name], r[f"{name}_std"], r[f"{name}_n"])
    if st.n == 1 and r["n"] == 1:
        return f"{st.mean * scale:.{digits}f}{unit}"
    return st.prose(scale, digits, unit)


def plural(n: int, word: str) -> str:
    return word if n == 1 else f"{word}s"


def binned_value(bins: Bins | None, value):
    return value if bins is None or value is None else bins.label(value)


def section_front(front: Sequence, names: Sequence[str], col: Curves, searched: Sequence[str],
                  n_objectives: int, objectives: Sequence = ()) -> str:
    """Optuna's front; `objectives` (the study's Objective objects, in `names`' order) say how each value reads:
    a fraction in %, as everywhere on the page."""
    title = "Trial-level Pareto front" if n_objectives > 1 else "Best trial"
    if not front:
        return f"<h2>{title}</h2>" + missing("No finished, feasible trial yet, so there is no front.")
    keys = list(col.keys) or list(searched)
    shown = {o.spec: o for o in objectives}
    rows, attrs = [], []
    for t in sorted(front, key=lambda t: t.number):
        s = t.user_attrs.get("params_all", {})
        rows.append([t.number, *[shown[n].display(v) if n in shown else fmt(v) for n, v in zip(names, t.values)],
                     *[setting(s.get(k, "")) for k in keys], kind(t), len(t.user_attrs.get("seeds", []))])
        attrs.append(f' data-trial="{t.number}"')
    what = ("Optuna's Pareto-optimal trials (study.best_trials): no other trial is at least as good in every "
            "objective and better in one." if n_objectives > 1 else "Optuna's best trial.")
    return (f"<h2>{title}</h2><p>{what} Objective values are means over each trial's seeds.</p>"
            + table(["trial", *(shown[n].heading if n in shown else n for n in names), *keys, "kind", "seeds"], rows,
                    table_id="pareto-trials", row_attrs=attrs,
                    numeric=[True] * (1 + len(names)) + [False] * (len(keys) + 1) + [True]))


def section_frontier(trials: Sequence, col: Curves, eps: float) -> str:
    frontier = round_frontier(trials)
    if not frontier:
        return "<h2>Round-level frontier</h2>" + missing("No finished trial has rounds yet.")
    png = plots.plot_pareto(trials, frontier, None, title="every round of every finished trial", epsilon=eps)
    keys = col.keys
    by_number = {t.number: t for t in trials}
    rows, attrs = [], []
    for p in frontier:
        s = by_number[p["trial"]].user_attrs.get("params_all", {})
        rows.append([f"{p['density'] * 100:.2f}%", pct(p["val_accuracy"], 2),
                     pct(p.get("test_accuracy_at_early_stop"), 2), pct(p.get("test_accuracy"), 2),
                     p["trial"], p["round"], *[setting(s.get(k, "")) for k in keys], p["kind"]])
        attrs.append(f' data-trial="{p["trial"]}" data-round="{p["round"]}"')
    caption = ("Each grey point is one round of one finished trial's ticket (its mean over seeds), at its density "
               "and validation accuracy, the number the study selects on. Red points are non-dominated: no other "
               "round is at least as sparse and at least as accurate. Labels tNrM = trial N, round M. The dashed "
               "line is the mean dense (round 0) validation accuracy; the grey band below it is ε.")
    return ("<h2>Round-level frontier</h2>" + figure(png, "round-level frontier", caption)
            + table(["density", "val acc %", "test acc % at early stop", "test acc % at end", "trial", "round",
                     *keys, "kind"], rows, table_id="round-frontier", row_attrs=attrs,
                    numeric=[True] * 6 + [False] * (len(keys) + 1)))


def section_recommendation(front: Sequence, cmp: Comparison, names: Sequence[str]) -> str:
    head = "<h2>Recommendation</h2>"
    if not front:
        return head + missing("No finished trial yet.")
    entries = []
    for t in sorted(front, key=lambda t: t.number):
        r = row_of(cmp, t)
        if r is not None and all(x[1] is not r for x in entries):
            entries.append((t, r))
    if not entries:
        return head + missing("The front's trials have no rows to compare.")
    keys = cmp.by + cmp.context
    gaps = {(tuple(g[k] for k in keys), g["control"]): g for g in cmp.gaps}
    items = []
    for _, r in entries:
        label = row_label(r, keys)
        controls = [g for (k, _), g in gaps.items() if k == tuple(r[x] for x in keys)]
        beside = ""
        if controls and any(g.get("gap_at_ticket") is not None for g in controls):
            # (at the ticket's own round, as the run's summary says it: the same number in both places)
            parts = [f"{g['control'].removeprefix('control: ')} {at_ticket_text(g, spread=not cmp.single)}"
                     for g in controls]
            beside = ("; ticket minus its controls, in points of test accuracy at the ticket's round: "
                      + ", ".join(parts))
        numbers = ", ".join(map(str, r["trials"]))
        items.append(f"<li><b>{e(label)}</b> ({e(r['kind'])}; {plural(len(r['trials']), 'trial')} {e(numbers)}): "
                     f"ticket sparsity {e(said(r, 'ticket_sparsity'))}, ticket test accuracy "
                     f"{e(said(r, 'ticket_accuracy'))}, at {e(said(r, 'train_iterations', 1.0, 0, ''))} "
                     f"training iterations{e(beside)}.</li>")
    each = "one curve each" if cmp.single else "mean ± std over curves, n curves"
    text = [head, f"<p>Settings on the front ({each}):</p><ul>" + "".join(items) + "</ul>"]
    ranked = sorted((r for _, r in entries), key=lambda r: -(r["ticket_sparsity"] or 0.0))
    top = ranked[0]
    runners_up = sorted((r for r in cmp.rows if r["kind"] == TICKET and all(r is not x for _, x in entries)
                         and r["ticket_sparsity"] is not None), key=lambda r: -r["ticket_sparsity"])[:3]
    verdicts, untested = [], 0
    for r, where in [*((r, "on the front") for r in ranked[1:]), *((r, "not on the front") for r in runners_up)]:
        a = [c["ticket_sparsity"] for c in top["curves"]]
        b = [c["ticket_sparsity"] for c in r["curves"]]
        p = welch(a, b)
        if p is None:  # (one curve on a side: counted below, or said once by the note on n = 1)
            untested += 1
            continue
        verdicts.append(f"vs {row_label(r, keys)} ({where}, {stat_cell(r, 'ticket_sparsity')} %): "
                        f"{distinguishable_text(len(a), len(b), p)[1]}")
    if len(ranked) > 1:
        cheapest = min(ranked, key=lambda r: r["train_iterations"] or 0.0)
        text.append(f"<p>Highest ticket sparsity on the front: <b>{e(row_label(top, keys))}</b>. Cheapest: "
                    f"<b>{e(row_label(cheapest, keys))}</b> ({e(said(cheapest, 'train_iterations', 1.0, 0, ''))}"
                    " iterations).</p>")
    if verdicts:
        text.append(f"<p>Is the ticket sparsity of {e(row_label(top, keys))} different from the other settings' "
                    "given the seeds (Welch's t-test on per-curve values, p &lt; 0.05)?</p>"
                    '<ul class="notes">' + "".join(f"<li>{e(v)}</li>" for v in verdicts) + "</ul>"
                    + (f"<p>{untested} other {plural(untested, 'setting')} cannot be tested against it: one curve on "
                       "a side, so no seed-to-seed spread.</p>" if untested else ""))
    if all(r["n"] < 2 for _, r in entries):
        text.append('<p class="note">Every setting on the front rests on n = 1 curve: seed-to-seed spread is '
                    "unknown, so none of these differences is established or can be tested. Raise "
                    "[study].replicates to 3 or more (or repeat trials with other seeds) before choosing.</p>")
    elif untested and not verdicts:
        text.append(f'<p class="note">None of the {untested} other settings can be tested against '
                    f"{e(row_label(top, keys))}: each has one curve (no seed-to-seed spread).</p>")
    if any(r["kind"] != TICKET for _, r in entries):
        text.append('<p class="note">A control is on the front: at these settings the ticket does not beat its '
                    "random control on the objectives, which is the hypothesis under test.</p>")
    return "".join(text)
