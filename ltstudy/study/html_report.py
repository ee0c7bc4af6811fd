"""`ltstudy report`: one self-contained HTML page that answers "which p, which k?" for a study.

Figures are PNGs embedded as base64, the CSS is inline, nothing is fetched. Every number comes from
the study's own trials through reports.py, with the same definitions as `compare` and the objectives.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import plots
from .compare import (
    ACCURACY_KEYS,
    SPLIT_NAMES,
    Comparison,
    bins,
    compare,
    levels,
    mean_only,
    pooled_settings,
    row_label,
)
from .curves import TICKET, Curve, density_label, interpolate
from .frontier import round_frontier
from .stats import Stat, distinguishable_text, welch
from .trial_results import Curves, census, collect, kind

if TYPE_CHECKING:
    import optuna

    from .config import StudyConfig

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:1400px;
padding:0 1.2rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}h3{font-size:1.05rem;margin-top:1.4rem}
.meta{color:#555;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.8rem}
th,td{border:1px solid #d5d5d5;padding:.25rem .5rem;text-align:left;vertical-align:top}td{white-space:nowrap}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:.8rem 0 1.4rem}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444;max-width:980px}
.note{background:#fff8e1;border-left:3px solid #f0b400;padding:.4rem .7rem;font-size:.9rem}
.missing{color:#666;font-style:italic}
ul.notes{font-size:.85rem}
.scroll{overflow-x:auto}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v * 100:.{digits}f}"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{_img(png, alt)}<figcaption>{caption}</figcaption></figure>"


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "",
           row_attrs: Iterable[str] | None = None, numeric: Sequence[bool] | None = None) -> str:
    rows = list(rows)
    attrs = list(row_attrs) if row_attrs is not None else [""] * len(rows)
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{a}>" + "".join(f'<td class="num">{_e(v)}</td>' if num else f"<td>{_e(v)}</td>"
                             for v, num in zip(r, numeric)) + "</tr>"
        for r, a in zip(rows, attrs))
    tid = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _missing(sentence: str) -> str:
    return f'<p class="missing">{_e(sentence)}</p>'


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _describe_param(p) -> tuple[str, str]:
    if p.choices is not None:
        return "choices", ", ".join(map(str, p.choices))
    if p.low is not None:
        extra = (f", step {p.step}" if p.step else "") + (", log scale" if p.log else "")
        return "range", f"[{p.low}, {p.high}]{extra}"
    return "fixed", str(p.fixed)


# --------------------------------------------------------------------------- the report


def build_report(study: optuna.Study, cfg: StudyConfig, by: Sequence[str] | None = None,
                 density: float = 0.2) -> str:
    """The whole HTML page."""
    from .frontier import pareto_trials

    trials = study.get_trials(deepcopy=False)
    eps = cfg.study.epsilon
    searched = list(cfg.searched)
    col = collect(trials, searched)
    names = list(study.user_attrs.get("objectives") or cfg.study.objectives)
    counts = census(trials)
    front = [t for t in pareto_trials(study) if t.user_attrs.get("duplicate_of") is None]
    overview = compare(trials, [], eps, density, searched, split="test", objectives=cfg.study.objectives)
    by = [k for k in (by if by is not None else searched)]

    parts = [
        f"<h1>Lottery-ticket study: {_e(study.study_name)}</h1>",
        f'<p class="meta">{_e(cfg.base.model.name)} on {_e(cfg.base.data.name)}; '
        f"{_e(cfg.base.train.iterations)} training iterations per round; study file {_e(cfg.path or '?')}; "
        f"generated {_e(datetime.datetime.now().strftime('%Y-%m-%d %H:%M'))}. "
        "n is always the number of (setting combination, seed) curves behind a number; "
        "mean ± sample standard deviation, and “—” when n = 1.</p>",
        _section_setup(cfg, names, counts),
        _section_recommendation(front, overview, col, names, eps),
        _section_front(front, names, col, searched, len(study.directions)),
        _section_frontier(trials, col, eps),
        _section_combinations(overview),
        _section_by_setting(trials, col, by, eps, density, searched),
        _section_heatmaps(col, eps, density),
        _section_early_stop(col, eps, cfg.base.train.iterations),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(study.study_name)}: ltstudy report</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _section_setup(cfg: StudyConfig, names: Sequence[str], counts: dict[str, list[int]]) -> str:
    search = _table(["setting", "how", "values"],
                    [[k, *_describe_param(p)] for k, p in cfg.search.items()], table_id="searched")
    objectives = "".join(
        f"<li><b>{_e(n)}</b> ({_e(o.direction)}): {_e(o.meaning)}</li>"
        for n, o in zip(names, cfg.objectives))
    labels = {"complete": "finished (complete)", "pruned": "pruned or stopped early (rounds kept)",
              "diverged": "diverged (counted, never averaged)", "failed": "failed",
              "duplicate": "skipped as duplicates of another trial", "running": "running or queued"}
    rows = [[labels[k], len(v), ", ".join(map(str, v[:30])) + (" …" if len(v) > 30 else "")]
            for k, v in counts.items()]
    return (
        "<h2>What was searched</h2>" + search
        + f"<p>Objectives:</p><ul>{objectives}</ul>"
        + f"<p>ε = {cfg.study.epsilon:g}: a round <i>matches</i> if its validation accuracy is at least its own "
          f"dense round's minus ε. Seeds per trial: {cfg.study.replicates} (replicate i trains with seed "
          f"{cfg.study.seed} + i). Sampler: {_e(cfg.study.sampler)}.</p>"
        + _table(["trials", "count", "numbers"], rows, table_id="trial-counts", numeric=[False, True, False]))


def _row_of(cmp: Comparison, trial) -> dict | None:
    settings = trial.user_attrs.get("params_all", {})
    key = tuple(settings.get(k) for k in cmp.by + cmp.context)
    for r in cmp.rows:
        if tuple(r[k] for k in cmp.by + cmp.context) == key:
            return r
    return None


def _section_front(front: Sequence, names: Sequence[str], col: Curves, searched: Sequence[str],
                   n_objectives: int) -> str:
    title = "Trial-level Pareto front" if n_objectives > 1 else "Best trial"
    if not front:
        return f"<h2>{title}</h2>" + _missing("No finished, feasible trial yet, so there is no front.")
    keys = [k for k in col.keys] or searched
    rows, attrs = [], []
    for t in sorted(front, key=lambda t: t.number):
        s = t.user_attrs.get("params_all", {})
        rows.append([t.number, *[_fmt(v) for v in t.values], *[s.get(k, "") for k in keys],
                     kind(t), len(t.user_attrs.get("seeds", []))])
        attrs.append(f' data-trial="{t.number}"')
    what = ("Optuna's Pareto-optimal trials (study.best_trials): no other trial is at least as good in every "
            "objective and better in one." if n_objectives > 1 else "Optuna's best trial.")
    return (f"<h2>{title}</h2><p>{what} Objective values are means over each trial's seeds.</p>"
            + _table(["trial", *names, *keys, "kind", "seeds"], rows, table_id="pareto-trials", row_attrs=attrs,
                     numeric=[True] * (1 + len(names)) + [False] * (len(keys) + 1) + [True]))


def _section_frontier(trials: Sequence, col: Curves, eps: float) -> str:
    frontier = round_frontier(trials)
    if not frontier:
        return "<h2>Round-level frontier</h2>" + _missing("No finished trial has rounds yet.")
    png = plots.plot_pareto(trials, frontier, None, title="every round of every finished trial", epsilon=eps)
    keys = col.keys
    by_number = {t.number: t for t in trials}
    rows, attrs = [], []
    for p in frontier:
        s = by_number[p["trial"]].user_attrs.get("params_all", {})
        rows.append([f"{p['density'] * 100:.2f}%", _pct(p["val_accuracy"], 2),
                     _pct(p.get("test_accuracy_at_early_stop"), 2), _pct(p.get("test_accuracy"), 2),
                     p["trial"], p["round"], *[s.get(k, "") for k in keys], p["kind"]])
        attrs.append(f' data-trial="{p["trial"]}" data-round="{p["round"]}"')
    caption = ("Each grey point is one round of one finished trial (its mean over seeds), at its density and "
               "validation accuracy, the number the study selects on. Red points are non-dominated: no other round "
               "is at least as sparse and at least as accurate. Labels tNrM = trial N, round M. The dashed line is "
               "the mean dense (round 0) validation accuracy; the grey band below it is ε.")
    return ("<h2>Round-level frontier</h2>" + _figure(png, "round-level frontier", caption)
            + _table(["density", "val acc %", "test acc % at early stop", "test acc % at end", "trial", "round",
                      *keys, "kind"], rows, table_id="round-frontier", row_attrs=attrs,
                     numeric=[True] * 6 + [False] * (len(keys) + 1)))


def _stat_cell(r: dict, name: str, scale: float = 100.0, digits: int = 1) -> str:
    return Stat(r[name], r[f"{name}_std"], r[f"{name}_n"]).text(scale, digits)


def _section_combinations(cmp: Comparison) -> str:
    if not cmp.rows:
        return "<h2>Every setting combination</h2>" + _missing("No finished trials.")
    keys = cmp.by + cmp.context
    cols = [f"accuracy_at_{d:g}" for d in cmp.grid]
    rows = [[*(r[k] for k in keys), r["kind"], r["n"], ", ".join(map(str, r["trials"])),
             _stat_cell(r, "ticket_sparsity"), _stat_cell(r, "ticket_accuracy"), *(_stat_cell(r, c) for c in cols),
             _stat_cell(r, "train_iterations", 1.0, 0)] for r in cmp.rows]
    headers = [*keys, "kind", "n", "trials", "ticket sparsity %", "ticket test acc %",
               *(f"test acc % @ {density_label(d)}" for d in cmp.grid), "train iterations"]
    extra = ""
    pooled = mean_only(cmp)
    if pooled:
        extra += (f'<p class="note">Trials {_e(", ".join(map(str, pooled)))} stored only their mean over seeds (they '
                  "ran before rounds_per_seed was recorded): each counts as one curve, n = 1, and their ticket "
                  "sparsity is that of the mean curve, which can differ from the objective's mean of per-seed "
                  "values.</p>")
    if cmp.repeats:
        extra += ("<p>Counted once (same settings and seed as an earlier trial, so the same curve): "
                  + _e(", ".join(f"trial {a} = trial {b}" for a, b in cmp.repeats)) + ".</p>")
    return ("<h2>Every setting combination</h2>"
            f"<p>One row per combination of the searched settings; controls are never pooled with tickets. "
            f"Cells are mean ± std (n) in %. Ticket sparsity is computed per curve as the objective does. "
            f"Accuracies are {_e(SPLIT_NAMES['test'])} (the paper's reported number); “@ X” values are interpolated "
            "linearly in log density between each curve's rounds and never extrapolated, so their n can be smaller "
            "than the row's.</p>"
            + _table(headers, rows, table_id="combinations",
                     numeric=[False] * (len(keys) + 1) + [True, False] + [True] * (3 + len(cols))) + extra)


def _section_by_setting(trials: Sequence, col: Curves, by: Sequence[str], eps: float, density: float,
                        searched: Sequence[str]) -> str:
    out = ["<h2>Accuracy vs density, one setting at a time</h2>",
           "<p>Each panel holds every other setting fixed (its title); one curve per value of the compared "
           "setting; points are rounds, at the mean over curves, with 95% t-interval error bars (none when n = 1). "
           "Accuracy is test accuracy at the early-stop iteration. Notes below each figure test whether rows that "
           "differ only in that setting have different ticket sparsity (Welch's t-test on per-curve values, "
           "p < 0.05; no correction for multiple comparisons).</p>"]
    if not by:
        out.append(_missing("The study searched no setting (every [search] entry is fixed), so there is nothing "
                            "to compare."))
    for setting in by:
        out.append(f"<h3>{_e(setting)}</h3>")
        png, shown = plots.figure_by_setting(col, setting, eps)
        if png is None:
            out.append(_missing(f"No two finished trials differ only in {setting}, so its effect cannot be read "
                                "at fixed other settings (more trials or a grid sampler would give pairs)."))
            continue
        total = len(plots.contexts_for(col, setting))
        more = f" {total - len(shown)} more combinations are in the table above." if total > len(shown) else ""
        out.append(_figure(png, f"accuracy vs density by {setting}",
                           f"{_e(setting)}: {len(shown)} of {total} combinations of the other settings under which "
                           f"{_e(setting)} takes two or more values (those with the most curves).{_e(more)} "
                           "Solid lines: tickets; dashed: controls. n = curves behind each point. The grey dashed "
                           "line is the panel's mean dense (round 0) test accuracy; the shaded band below it is ε "
                           "(tickets are matched on validation accuracy)."))
        notes = compare(trials, [setting], eps, density, searched).notes
        if notes:  # the pairs that differ in full; all of them behind a summary (a grid makes hundreds)
            differ = [n for n in notes if n.get("distinguishable")]
            out.append(f'<p class="note">{_e(setting)}: {len(notes)} pairs of settings that differ only in '
                       f'{_e(setting)} were compared on ticket sparsity; {len(differ)} differ (Welch, p &lt; 0.05), '
                       f'{len(notes) - len(differ)} are not distinguishable given the seeds.</p>')
            if differ:
                out.append('<ul class="notes">' + "".join(f"<li>{_e(n['text'])}</li>" for n in differ) + "</ul>")
            items = "".join(f"<li>{_e(n['text'])}</li>" for n in notes)
            out.append(f'<details><summary>every comparison ({len(notes)})</summary><ul class="notes">{items}'
                       "</ul></details>")
    return "".join(out)


def _section_heatmaps(col: Curves, eps: float, density: float) -> str:
    head = "<h2>p × k: ticket sparsity and accuracy (tickets only)</h2>"
    tickets = [c for c in col.curves if c.kind == TICKET]
    if not col.curves:
        return head + _missing("No finished trials yet.")
    if not tickets:
        return head + _missing("The study has no ticket trials (only controls), so there is no p × k map.")
    ps = levels(c.settings.get("prune_rate") for c in tickets)
    ks = levels(c.settings.get("rewind_iter") for c in tickets)
    if len(ps) < 2 or len(ks) < 2:
        only = [f"one {name} ({vals[0]})" for name, vals in (("p", ps), ("k", ks)) if len(vals) < 2]
        return head + _missing(f"The ticket trials have only {' and '.join(only)}, so there is no p × k map; the "
                               "table of every setting combination above compares what varies.")
    order, binned_text = {}, ""
    for key, name in (("prune_rate", "p"), ("rewind_iter", "k")):
        found = bins(c.settings.get(key) for c in tickets)
        if found is not None:  # a searched range: every trial has its own value
            order[key], label = found
            tickets = [dataclasses.replace(c, settings={**c.settings, key: label(c.settings[key])}) for c in tickets]
            binned_text += f" {name} takes many values (a range), so it is binned into {len(order[key])} equal bins."
    sub = Curves(tickets, col.keys)
    pooled = pooled_settings(tickets, col.keys, ["prune_rate", "rewind_iter"])
    pooled_text = ("Each cell pools every ticket curve with that p and k across " +
                   "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in pooled.items()) + "."
                   if pooled else "No other setting varies among the ticket trials, so nothing else is pooled.")
    acc = ACCURACY_KEYS["test"]
    sparsity = plots.heatmap(sub, "prune_rate", "rewind_iter", lambda c: c.ticket_sparsity(eps),
                             "ticket sparsity (mean ± std over curves)", order=order)
    parts = [head, f"<p>Controls (random re-init, random mask) are excluded. {_e(pooled_text)}{_e(binned_text)} "
                   "n in each cell = curves (trial × seed).</p>",
             _figure(sparsity, "p x k ticket sparsity", "Ticket sparsity in %: the sparsest round within ε of dense "
                     "validation accuracy, per curve, then averaged (as the objective). In both maps the colour scale "
                     "spans at least twice the largest std of a cell, so differences within the seed-to-seed spread "
                     "do not look like contrasts; read the numbers.")]
    if not any(interpolate(c.rounds, density, acc) is not None for c in tickets):
        parts.append(_missing(f"No ticket curve reaches density {density_label(density)}, so there is no accuracy "
                              "map there (pass --density with a larger value)."))
    else:
        png = plots.heatmap(sub, "prune_rate", "rewind_iter", lambda c: c.at(density, acc),
                            f"test accuracy at early stop at {density_label(density)} density (mean ± std)",
                            order=order)
        parts.append(_figure(png, "p x k accuracy at density",
                             f"Test accuracy at the early-stop iteration at density {density_label(density)}, "
                             "interpolated linearly in log density between each curve's rounds; curves that do not "
                             "reach it are left out, so n can be smaller than in the map above (an empty cell: none "
                             "reached it)."))
    return "".join(parts)


def _section_early_stop(col: Curves, eps: float, iterations: object = "T") -> str:
    head = "<h2>Early stopping: the winning ticket against its controls</h2>"
    controls = [c for c in col.curves if c.kind != TICKET]
    if not controls:
        return head + _missing("The study has no control trials (reinit = \"random\" or mask = \"random\"), so there "
                               "is nothing to set the ticket against.")
    others = [k for k in col.keys if k not in ("reinit", "mask")]

    def base(c: Curve) -> tuple:
        return tuple(c.settings.get(k) for k in others)

    groups: dict[tuple, dict[str, list[Curve]]] = {}
    for c in col.curves:
        label = c.kind if c.kind != TICKET else f"{TICKET}:{c.settings.get('reinit')}:{c.settings.get('mask')}"
        groups.setdefault(base(c), {}).setdefault(label, []).append(c)
    best = None
    for b, kinds in groups.items():
        ctrl = [(k, v) for k, v in kinds.items() if not k.startswith(TICKET)]
        for k, ticket in kinds.items():
            if k.startswith(TICKET) and ctrl:
                score = (Stat.of(c.ticket_sparsity(eps) for c in ticket).mean, len(ticket))
                if best is None or score > best[0]:
                    best = (score, b, ticket, ctrl)
    if best is None:
        return head + _missing("No control shares all its other settings with a ticket trial, so no like-for-like "
                               "comparison is possible.")
    _, b, ticket, ctrl = best
    s = ticket[0].settings
    label = row_label({**dict(zip(others, b, strict=True)), "reinit": s.get("reinit")},
                      [k for k in [*others, "reinit"] if k in col.keys])
    png = plots.figure_early_stop(ticket, ctrl, label)
    return (head + _figure(png, "early-stop iteration vs density",
                           f"The ticket with the highest mean ticket sparsity among those with a control at the "
                           f"same settings ({_e(label)}), against the controls that share all its other settings. "
                           "Left: the iteration of minimum validation loss (Frankle & Carbin's Figure 4); it cannot "
                           f"exceed the training length ({_e(iterations)} iterations per round), so points there mean "
                           "the validation loss was still falling at the end. Right: test accuracy at that iteration. "
                           "Points are rounds: mean over curves with 95% t-interval error bars; n in the legend."))


def _section_recommendation(front: Sequence, cmp: Comparison, col: Curves, names: Sequence[str],
                            eps: float) -> str:
    head = "<h2>Recommendation</h2>"
    if not front:
        return head + _missing("No finished trial yet.")
    entries = []
    for t in sorted(front, key=lambda t: t.number):
        r = _row_of(cmp, t)
        if r is not None and all(e[1] is not r for e in entries):
            entries.append((t, r))
    items = []
    for _, r in entries:
        label = row_label(r, cmp.by + cmp.context)
        items.append(f"<li><b>{_e(label)}</b> ({_e(r['kind'])}; trials {_e(', '.join(map(str, r['trials'])))}): "
                     f"ticket sparsity {_e(_stat_cell(r, 'ticket_sparsity'))} %, ticket test accuracy "
                     f"{_e(_stat_cell(r, 'ticket_accuracy'))} %, at {_e(_stat_cell(r, 'train_iterations', 1.0, 0))} "
                     "training iterations.</li>")
    text = [head, "<p>Settings on the front (mean ± std (n) over curves):</p><ul>" + "".join(items) + "</ul>"]
    names = cmp.by + cmp.context
    ranked = sorted((r for _, r in entries), key=lambda r: -(r["ticket_sparsity"] or 0.0))
    top = ranked[0]
    on_front = list(ranked[1:])
    runners_up = sorted((r for r in cmp.rows if r["kind"] == TICKET and all(r is not e for _, e in entries)
                         and r["ticket_sparsity"] is not None), key=lambda r: -r["ticket_sparsity"])[:3]
    verdicts = []
    for r, where in [*((r, "on the front") for r in on_front), *((r, "not on the front") for r in runners_up)]:
        a = [c["ticket_sparsity"] for c in top["curves"]]
        b = [c["ticket_sparsity"] for c in r["curves"]]
        verdicts.append(f"vs {row_label(r, names)} ({where}, {_stat_cell(r, 'ticket_sparsity')} %): "
                        f"{distinguishable_text(len(a), len(b), welch(a, b))[1]}")
    if len(ranked) > 1:
        cheapest = min(ranked, key=lambda r: r["train_iterations"] or 0.0)
        text.append(f"<p>Highest ticket sparsity on the front: <b>{_e(row_label(top, names))}</b>. Cheapest: "
                    f"<b>{_e(row_label(cheapest, names))}</b> ({_e(_stat_cell(cheapest, 'train_iterations', 1.0, 0))}"
                    " iterations).</p>")
    if verdicts:
        text.append(f"<p>Is the ticket sparsity of {_e(row_label(top, names))} different from the other settings' "
                    "given the seeds (Welch's t-test on per-curve values, p &lt; 0.05)?</p>"
                    '<ul class="notes">' + "".join(f"<li>{_e(v)}</li>" for v in verdicts) + "</ul>")
    if all(r["n"] < 2 for _, r in entries):
        text.append('<p class="note">Every setting on the front rests on n = 1 curve: seed-to-seed spread is '
                    "unknown, so none of these differences is established. Raise [study].replicates to 3 or more "
                    "(or repeat trials with other seeds) before choosing.</p>")
    if any(r["kind"] != TICKET for _, r in entries):
        text.append('<p class="note">A control is on the front: at these settings the ticket does not beat its '
                    "random control on the objectives, which is the hypothesis under test.</p>")
    return "".join(text)
