"""The report's section on where the pruning falls: each layer's density, round by round."""

from __future__ import annotations

from ..compare import row_label
from ..curves import TICKET
from ..layer_plots import figure_layers
from ..stats import Stat
from ..trial_results import Curves
from .html import e, figure, missing


def section_layers(col: Curves, eps: float) -> str:
    head = "<h2>Density per layer</h2>"
    tickets = [c for c in col.curves if c.kind == TICKET and c.rounds and c.rounds[0].get("layer_density")]
    if not tickets:
        return head + missing("The trials did not record per-layer densities (they ran before ltstudy kept them).")
    groups: dict[tuple, list] = {}
    for c in tickets:
        groups.setdefault(col.key(c), []).append(c)
    key, members = max(groups.items(), key=lambda kv: (Stat.of(c.ticket_sparsity(eps) for c in kv[1]).mean or 0,
                                                       len(kv[1])))
    label = row_label(dict(zip(col.keys, key, strict=True)), col.keys) or "all trials"
    png = figure_layers(members, f"the sparsest ticket: {label}")
    return head + figure(png, "density per layer per round",
                         f"Each prunable layer's density (weights remaining) per round for the setting with the "
                         f"sparsest ticket ({e(label)}), mean over its {len(members)} curve(s); the dashed line is "
                         "the whole network's. A layer with a rate of its own (an output rate, a layer rate) or "
                         "under one global threshold falls at its own pace.")
