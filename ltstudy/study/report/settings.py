"""The report's sections on settings: every combination, one setting at a time (ranges too), and p × k maps."""

from __future__ import annotations

from collections.abc import Sequence

from .. import plots
from ..binning import Bins, binned, ranges
from ..compare import ACCURACY_KEYS, SPLIT_NAMES, Comparison, compare, levels, mean_only, pooled_settings
from ..curves import TICKET, density_label, interpolate
from ..trial_results import Curves
from .html import e, figure, missing, stat_cell, table


def bins_note(bins: dict[str, Bins]) -> str:
    """One sentence per binned setting: its bins and the curves in each."""
    return "".join(f'<p class="note">{e(b.describe())}.</p>' for b in bins.values())


def section_combinations(cmp: Comparison) -> str:
    if not cmp.rows:
        return "<h2>Every setting combination</h2>" + missing("No finished trials.")
    keys = cmp.by + cmp.context
    cols = [f"accuracy_at_{d:g}" for d in cmp.grid]
    spread = not cmp.single  # (every row one curve: the cells hold values, and the caption says so once)
    rows = [[*(r[k] for k in keys), r["kind"].removeprefix("control: "), r["n"], ", ".join(map(str, r["trials"])),
             stat_cell(r, "ticket_sparsity", row_n=r["n"], spread=spread),
             stat_cell(r, "ticket_accuracy", row_n=r["n"], spread=spread),
             *(stat_cell(r, c, row_n=r["n"], spread=spread) for c in cols),
             stat_cell(r, "theoretical_speedup", 1.0, 2, row_n=r["n"], spread=spread),
             stat_cell(r, "train_iterations", 1.0, 0, row_n=r["n"], spread=spread),
             *(stat_cell(r, o, 1.0, 4, row_n=r["n"], spread=spread) for o in cmp.objectives)]
            for r in cmp.rows]
    headers = [*keys, "ticket or control", "n", "trials", "ticket sparsity %", "ticket test acc %",
               *(f"test acc % @ {density_label(d)}" for d in cmp.grid), "ticket speedup ×", "train iterations",
               *cmp.objectives]
    extra = ""
    pooled = mean_only(cmp)
    if pooled:
        extra += (f'<p class="note">Trials {e(", ".join(map(str, pooled)))} stored only their mean over seeds (they '
                  "ran before rounds_per_seed was recorded): each counts as one curve, n = 1, and their ticket "
                  "sparsity is that of the mean curve, which can differ from the objective's mean of per-seed "
                  "values.</p>")
    if cmp.repeats:
        extra += ("<p>Counted once (same settings and seed as an earlier trial, so the same curve): "
                  + e(", ".join(f"trial {a} = trial {b}" for a, b in cmp.repeats)) + ".</p>")
    return ("<h2>Every setting combination</h2>"
            "<p>One row per combination of the searched settings and kind: a ticket's controls are rows of their "
            "own, never pooled with it. "
            + ("Every row is one curve: a cell is its value, in %, with no spread; n/a: the curve never "
               "reached that density. " if cmp.single else "Cells are mean ± std over the row's n curves, in %; a "
               "cell with fewer curves gives its own n in brackets. ")
            + "Ticket sparsity is computed per curve as the objective does. "
            f"Accuracies are {e(SPLIT_NAMES['test'])} (the paper's reported number); “@ X” values are "
            "interpolated linearly in log density between each curve's rounds and never extrapolated, so their n "
            "can be smaller than the row's. The ticket's speedup is ShrinkBench's theoretical one: dense over "
            "non-zero multiply-adds per example.</p>" + bins_note(cmp.bins)
            + table(headers, rows, table_id="combinations",
                    numeric=[False] * (len(keys) + 1) + [True, False] + [True] * (4 + len(cols) + len(cmp.objectives)))
            + extra)


def _binned_others(bins: dict[str, Bins], setting: str) -> str:
    others = [k for k in bins if k != setting]
    return f" ({e(', '.join(others))} in the bins above)" if others else ""


def section_by_setting(trials: Sequence, col: Curves, by: Sequence[str], eps: float, density: float,
                       searched: Sequence[str], n_bins: int | None, log_ranges: set[str]) -> str:
    out = ["<h2>Accuracy vs density, one setting at a time</h2>",
           "<p>Tickets only (their controls are in the section above). Each panel holds every other setting fixed "
           "(its title); one curve per value of the compared setting; points are rounds, at the mean over curves, "
           "with 95% t-interval error bars (none when n = 1). Accuracy is test accuracy at the early-stop "
           "iteration. A setting searched as a range is shown by value (every curve, and the mean of each bin) and "
           "in bins. Notes below each figure test whether rows that differ only in that setting have different "
           "ticket sparsity (Welch's t-test on per-curve values, p < 0.05; no correction for multiple "
           "comparisons).</p>"]
    if not by:
        out.append(missing("The study searched no setting (every [search] entry is fixed), so there is nothing "
                           "to compare."))
    tickets = [c for c in col.curves if c.kind == TICKET]
    # Every range is binned, the compared setting's and the others' alike: two trials of a float range never
    # share a value, so unbinned they would leave no pair that differs only in the compared setting.
    bins = ranges(tickets, list(dict.fromkeys([*by, *col.keys])), n_bins)
    for setting in by:
        out.append(f"<h3>{e(setting)}</h3>")
        if setting in bins:
            png = plots.figure_range(tickets, setting, lambda c: c.ticket_sparsity(eps),
                                     "ticket sparsity % (per curve)", bins[setting], log_x=setting in log_ranges)
            out.append(figure(png, f"ticket sparsity vs {setting}",
                              f"Ticket sparsity of every ticket curve against its {e(setting)} (blue), and the mean of "
                              f"each of {len(bins[setting].labels)} quantile bins with its 95% t-interval (red; the "
                              "horizontal bar spans the bin; n beside it)."))
        binned_col = Curves(binned(tickets, bins), col.keys)
        png, shown = plots.figure_by_setting(binned_col, setting, eps)
        if png is None:
            out.append(missing(f"No two finished ticket curves differ only in {setting}, so its effect cannot be "
                               "read at fixed other settings (more trials or a grid sampler would give pairs)."))
            continue
        total = len(plots.contexts_for(binned_col, setting))
        more = f" {total - len(shown)} more combinations are in the table above." if total > len(shown) else ""
        out.append(figure(png, f"accuracy vs density by {setting}",
                          f"{e(setting)}{' (binned)' if setting in bins else ''}: {len(shown)} of {total} "
                          f"combinations of the other settings{_binned_others(bins, setting)} under which "
                          f"{e(setting)} takes two or more values "
                          f"(those with the most curves).{e(more)} n = curves behind each point. The grey dashed "
                          "line is the panel's mean dense (round 0) test accuracy; the shaded band below it is ε "
                          "(tickets are matched on validation accuracy)."))
        notes = [n for n in compare(trials, [setting], eps, density, searched, n_bins=n_bins).notes
                 if n.get("kind", TICKET) == TICKET]
        if notes:  # the pairs that differ in full; all of them behind a summary (a grid makes hundreds)
            differ = [n for n in notes if n.get("distinguishable")]
            untested = [n for n in notes if n.get("p") is None]
            same = len(notes) - len(differ) - len(untested)
            out.append(f'<p class="note">{e(setting)}: {len(notes)} pairs of ticket settings that differ only in '
                       f'{e(setting)}; {len(differ)} differ in ticket sparsity (Welch, p &lt; 0.05), {same} are not '
                       "distinguishable given the seeds"
                       + (f", and {len(untested)} cannot be tested (one curve on a side: no seed-to-seed spread)"
                          if untested else "") + ".</p>")
            if differ:
                out.append('<ul class="notes">' + "".join(f"<li>{e(n['text'])}</li>" for n in differ) + "</ul>")
            if len(untested) < len(notes):
                items = "".join(f"<li>{e(n['text'])}</li>" for n in notes if n.get("p") is not None)
                out.append(f'<details><summary>every pair that was tested ({len(notes) - len(untested)})</summary>'
                           f'<ul class="notes">{items}</ul></details>')
    return "".join(out)


def section_heatmaps(col: Curves, eps: float, density: float, n_bins: int | None) -> str:
    head = "<h2>p × k: ticket sparsity and accuracy (tickets only)</h2>"
    tickets = [c for c in col.curves if c.kind == TICKET]
    if not col.curves:
        return head + missing("No finished trials yet.")
    if not tickets:
        return head + missing("The study has no tickets (only controls), so there is no p × k map.")
    bins = ranges(tickets, ["prune_rate", "rewind_iter"], n_bins)
    tickets = binned(tickets, bins)
    ps = levels(c.settings.get("prune_rate") for c in tickets)
    ks = levels(c.settings.get("rewind_iter") for c in tickets)
    if len(ps) < 2 or len(ks) < 2:
        only = [f"one {name} ({vals[0]})" for name, vals in (("p", ps), ("k", ks)) if len(vals) < 2]
        return head + missing(f"The tickets have only {' and '.join(only)}, so there is no p × k map; the table of "
                              "every setting combination above compares what varies.")
    order = {k: list(b.labels) for k, b in bins.items()}
    sub = Curves(tickets, col.keys)
    pooled = pooled_settings(tickets, col.keys, ["prune_rate", "rewind_iter"])
    pooled_text = ("Each cell pools every ticket curve with that p and k across " +
                   "; ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in pooled.items()) + "."
                   if pooled else "No other setting varies among the tickets, so nothing else is pooled.")
    acc = ACCURACY_KEYS["test"]
    sparsity = plots.heatmap(sub, "prune_rate", "rewind_iter", lambda c: c.ticket_sparsity(eps),
                             "ticket sparsity (mean ± std over curves)", order=order)
    parts = [head, f"<p>Controls are excluded. {e(pooled_text)} n in each cell = curves (trial × seed); a cell "
                   "without a value reads “n/a, n=0”, as in the tables.</p>" + bins_note(bins),
             figure(sparsity, "p x k ticket sparsity", "Ticket sparsity in %: the sparsest round within ε of dense "
                    "validation accuracy, per curve, then averaged (as the objective). In both maps the colour scale "
                    "spans at least twice the largest std of a cell (and at least one point), so differences within "
                    "the seed-to-seed spread do not look like contrasts; read the numbers.")]
    if not any(interpolate(c.rounds, density, acc) is not None for c in tickets):
        parts.append(missing(f"No ticket curve reaches density {density_label(density)}, so there is no accuracy "
                             "map there (pass --density with a larger value)."))
    else:
        png = plots.heatmap(sub, "prune_rate", "rewind_iter", lambda c: c.at(density, acc),
                            f"test accuracy at early stop at {density_label(density)} density (mean ± std)",
                            order=order)
        parts.append(figure(png, "p x k accuracy at density",
                            f"Test accuracy at the early-stop iteration at density {density_label(density)}, "
                            "interpolated linearly in log density between each curve's rounds; curves that do not "
                            "reach it are left out, so n can be smaller than in the map above."))
    return "".join(parts)
