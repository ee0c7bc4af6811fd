"""The report's section on stability to SGD noise (`[stability] points`): each setting's instability per round."""

from __future__ import annotations

from ..compare import row_label
from ..curves import TICKET
from ..stability_plots import figure_instability
from ..trial_results import Curves
from .html import e, figure

MAX_LINES = 8


def section_stability(col: Curves) -> str:
    """The section, or nothing when no trial measured it (most studies do not: it costs a training per round)."""
    measured = [c for c in col.curves if c.kind == TICKET and any(r.get("val_instability") is not None
                                                                 for r in c.rounds[1:])]
    if not measured:
        return ""
    groups: dict[tuple, list] = {}
    for c in measured:
        groups.setdefault(col.key(c), []).append(c)
    shown = sorted(groups.items(), key=lambda kv: -len(kv[1]))[:MAX_LINES]
    lines = [(row_label(dict(zip(col.keys, key, strict=True)), col.keys) or "all trials", curves)
             for key, curves in shown]
    more = f" The {len(groups) - MAX_LINES} settings with the fewest curves are left out." \
        if len(groups) > MAX_LINES else ""
    return "<h2>Stability to SGD noise</h2>" + figure(figure_instability(lines), "instability per round",
                         "Each pruned round's validation instability (Frankle et al. 2020): the largest error on the "
                         "linear path between the round as trained and a second copy trained from the same start "
                         "m ⊙ θ_k with another data order, minus the mean of the two ends' errors; mean and 95% "
                         "t-interval over curves per setting. IMP finds matching tickets where this stays below 2 "
                         "points; a later k lowers it. The error along each path is drawn by `ltstudy stability "
                         f"--plot`.{e(more)}")
