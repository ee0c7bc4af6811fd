"""The report's section on linear connectivity of successive IMP levels (`[stability] level_points`)."""

from __future__ import annotations

from ...engine.linear_paths import STABLE
from ..compare import labelled_groups
from ..curves import TICKET
from ..level_summary import HEADERS, measured, rows, summarise_levels, verdict_headers, verdict_rows, verdicts
from ..stability_plots import figure_level_barriers
from ..trial_results import Curves
from .html import e, figure, table

MAX_LINES = 8
DEFINITION = ("The level barrier (Paul et al., ICLR 2023) of round r is the largest error on the linear path from "
              "round r - 1's trained weights to round r's, minus the mean of the two ends' errors")


def section_level_barrier(col: Curves, epsilon: float) -> str:
    """The section, or nothing when no trial measured it."""
    curves = measured([c for c in col.curves if c.kind == TICKET])
    if not curves:
        return ""
    lines, more = labelled_groups(col, curves, MAX_LINES)
    every = verdicts(curves, epsilon)
    out = ["<h2>Linear connectivity of successive levels</h2>",
           figure(figure_level_barriers(lines, epsilon), "level barrier against round and verdict",
                  f"{DEFINITION}. Left: the validation level barrier against round, mean and 95% t-interval over "
                  "curves (seeds) per setting; right: every measured round of every curve, by whether it matches "
                  f"the dense network (validation accuracy within ε = {100 * epsilon:g} points), one colour per "
                  "setting as on the left. IMP finds matching subnetworks while successive levels stay connected; "
                  f"too large a pruning rate raises the barrier.{e(more)}"),
           f"<p>Of the {every.n} measured rounds, {every.agree} agree with the prediction (connected and matching, "
           "or neither): rows say whether the round matches dense, columns whether its level barrier stays below "
           f"{100 * STABLE:g} points; the last column is the validation level barrier (points, mean ± sample std "
           "(n)).</p>",
           table(verdict_headers(), verdict_rows(every), numeric=[False, True, True, True])]
    for label, members in lines:
        out.append(f"<h3>{e(label)}</h3>" + table(HEADERS, rows(summarise_levels(members, epsilon)),
                                                 numeric=[True, True, True, True, True, True]))
    out.append("<p>Level barrier in error points: mean ± sample std over curves; connected: below 2 points. "
               "Validation selects; test is reported beside it. Nothing is trained for it: each round's trained "
               "weights are the search's own. With batch norm, each point's running statistics are recomputed "
               "on a fixed subset of the training split.</p>")
    return "".join(out)
