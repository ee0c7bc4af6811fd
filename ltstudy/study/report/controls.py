"""The report's sections on controls: every ticket beside its own controls, and early stopping (Figure 4)."""

from __future__ import annotations

from .. import plots
from ..compare import Comparison, at_ticket_text, gap_stat, row_label
from ..curves import TICKET, Curve, density_label
from ..stats import Stat
from ..trial_results import Curves
from .html import e, figure, missing, table

MAX_PANELS = 4


def _by_setting(col: Curves) -> dict[tuple, dict[str, list[Curve]]]:
    """Curves by their settings, then by kind: a ticket and its controls share their settings."""
    groups: dict[tuple, dict[str, list[Curve]]] = {}
    for c in col.curves:
        groups.setdefault(col.key(c), {}).setdefault(c.kind, []).append(c)
    return groups


def _ranked(col: Curves, eps: float) -> list[tuple[tuple, list[Curve], list[tuple[str, list[Curve]]]]]:
    """Settings with a ticket and at least one control, the sparsest tickets first."""
    out = []
    for key, kinds in _by_setting(col).items():
        ticket = kinds.get(TICKET)
        controls = sorted((k, v) for k, v in kinds.items() if k != TICKET)
        if ticket and controls:
            out.append((key, ticket, controls))
    return sorted(out, key=lambda x: -(Stat.of(c.ticket_sparsity(eps) for c in x[1]).mean or 0.0))


def section_controls(cmp: Comparison, col: Curves, eps: float) -> str:
    head = "<h2>Every ticket beside its controls</h2>"
    ranked = _ranked(col, eps)
    if not ranked:
        return head + missing("The study has no ticket with a control at the same settings; list the paper's "
                              "controls in [study] controls = [\"random-reinit\", \"random-mask\"] so that every "
                              "ticket is trained beside them.")
    keys = cmp.by + cmp.context
    panels = [(row_label(dict(zip(col.keys, key, strict=True)), col.keys) or "all trials", ticket, controls)
              for key, ticket, controls in ranked[:MAX_PANELS]]
    png = plots.figure_controls(panels, eps)
    grid = [d for d in cmp.grid if d < 1.0]  # (at 100% both are the same dense round: no gap to show)
    headers = [*keys, "control", "at the ticket's round", *(f"gap @ {density_label(d)}" for d in grid)]
    rows = [[*(g[k] for k in keys), g["control"].removeprefix("control: "), at_ticket_text(g, not cmp.single),
             *(gap_stat(g, d).text(100.0, 1, spread=not cmp.single) for d in grid)] for g in cmp.gaps]
    more = f" ({len(ranked) - len(panels)} more settings are in the table)" if len(ranked) > len(panels) else ""
    return (head + "<p>Frankle & Carbin's comparison for every setting: the ticket against its controls, trained "
                   "level by level on the ticket's own masks (the same densities), with the same seeds.</p>"
            + figure(png, "tickets beside their controls",
                     f"The {len(panels)} settings with the sparsest tickets{e(more)}: test accuracy at the early-stop "
                     "iteration against density, the ticket (solid) and each control (dashed); mean over seeds "
                     "with 95% t-interval error bars"
                     + (f" (the ticket's only: with more than {plots.MANY_CONTROLS} controls their bars would hide "
                        "one another; the table below has each spread)"
                        if max(len(cs) for _, _, cs in panels) > plots.MANY_CONTROLS else "")
                     + ", n in the legend. The grey line is the dense network's test accuracy; the band below it "
                       "is ε.")
            + "<p>Ticket minus control, in points of test accuracy at the early-stop iteration, at the ticket's own "
              "round (the sparsest within ε; its density given, the number the run's summary gives) and at each "
              "density, per seed (a ticket and its control share the seed)"
            + ("; one seed each, so no spread" if cmp.single else " and then mean ± std (n) over seeds")
            + "; positive: the ticket is better.</p>"
            + table(headers, rows, table_id="ticket-minus-control",
                    numeric=[False] * (len(keys) + 1) + [True] * (1 + len(grid))))


def section_early_stop(col: Curves, eps: float, iterations: object = "T") -> str:
    head = "<h2>Early stopping: the winning ticket against its controls</h2>"
    ranked = _ranked(col, eps)
    if not ranked:
        return head + missing("The study has no ticket with a control at the same settings, so there is nothing "
                              "to set the ticket against.")
    key, ticket, controls = ranked[0]
    label = row_label(dict(zip(col.keys, key, strict=True)), col.keys) or "all trials"
    png = plots.figure_early_stop(ticket, controls, label)
    return (head + figure(png, "early-stop iteration vs density",
                          f"The ticket with the highest mean ticket sparsity among those with controls ({e(label)}), "
                          "against its controls. Left: the iteration of minimum validation loss (Frankle & Carbin's "
                          "Figure 4); it cannot exceed the training length "
                          f"({e(iterations)} iterations per round), so points there mean the validation loss was "
                          "still falling at the end. Right: test accuracy at that iteration. Points are rounds: mean "
                          "over curves with 95% t-interval error bars"
                          + (" (the ticket's only, beside this many controls)" if len(controls) > plots.MANY_CONTROLS
                             else "") + "; n in the legend."))
