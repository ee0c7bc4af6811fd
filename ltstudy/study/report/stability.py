"""The report's section on stability to SGD noise (`[stability]`): instability against k and per round, the paths."""

from __future__ import annotations

from ...engine.linear_paths import StartKind
from ..compare import labelled_groups
from ..curves import TICKET
from ..stability_plots import figure_dense_k, figure_instability, figure_mean_paths
from ..stability_summary import HEADERS, earliest_stable_k, rows, summarise
from ..trial_results import Curves
from .html import e, figure, table

MAX_LINES = 8
DEFINITION = ("Instability (Frankle et al. 2020) is the largest error on the linear path between two copies trained "
              "from the same start with different data orders, minus the mean of the two ends' errors")


def section_stability(col: Curves) -> str:
    """The section, or nothing when no trial measured it (most studies do not: it costs a training per round)."""
    measured = [c for c in col.curves if c.kind == TICKET and any(r.get("stability_paths") or
                                                                 r.get("val_instability") is not None
                                                                 for r in c.rounds)]
    if not measured:
        return ""
    lines, more = labelled_groups(col, measured, MAX_LINES)
    summaries = [(label, summarise(curves)) for label, curves in lines]
    out = ["<h2>Stability to SGD noise</h2>"]
    dense = [(label, [s for s in ss if s.label == StartKind.DENSE]) for label, ss in summaries]
    dense = [(label, ss) for label, ss in dense if ss]
    shared = len(dense) > 1 and len({tuple((s.k, s.val, s.test) for s in ss) for _, ss in dense}) == 1
    if shared:
        dense = [("every setting", dense[0][1])]  # (the dense network is not what the settings vary)
    if dense:
        first = [(label, earliest_stable_k(ss)) for label, ss in dense]
        said = "; ".join((f"{e(label)}: " if len(first) > 1 else "") +
                         (f"k = {s.k}" if s else "none of the k measured") for label, s in first)
        same = " The dense network is the same in every setting (they vary the ticket only)." if shared else ""
        out.append(figure(figure_dense_k(dense), "instability against k",
                          f"{DEFINITION}, here from the dense network's θ_k for each k; mean and 95% t-interval "
                          f"over curves (seeds). The earliest stable k (mean validation instability below 2 points, "
                          f"the paper's threshold) is the principled rewinding point: {said}.{same}{e(more)}"))
    if any(s.label == StartKind.TICKET for _, ss in summaries for s in ss):
        out.append(figure(figure_instability(lines), "instability per round",
                          f"{DEFINITION}, here from each pruned round's start m ⊙ θ_k, the round as trained being "
                          "one copy; mean and 95% t-interval over curves per setting. IMP finds matching tickets "
                          f"where this stays below 2 points; a later k lowers it.{e(more)}"))
    label, ss = summaries[0]
    out.append(figure(figure_mean_paths(ss, f"error along the path ({label})"), "error along the path",
                      "The validation error at each point α of the path (1 - α) θ_A + α θ_B between the two copies, "
                      f"mean over the {max(s.n for s in ss)} curves of {e(label)}; flat is stable, a bump is a "
                      "barrier between the copies."))
    numeric = [False, True, True, True, True, True, True, True]
    if shared:
        out.append("<h3>the dense network (every setting)</h3>" + table(HEADERS, rows(dense[0][1]), numeric=numeric))
    for label, ss in summaries:
        shown_rows = [s for s in ss if not (shared and s.label == StartKind.DENSE)]
        if shown_rows:
            out.append(f"<h3>{e(label)}</h3>" + table(HEADERS, rows(shown_rows), numeric=numeric))
    out.append("<p>Instability in error points: mean ± sample std over curves; stable curves: below 2 points. "
               "Validation selects; test is reported beside it. With batch norm, each point's running statistics "
               "are recomputed on a fixed subset of the training split.</p>")
    return "".join(out)
