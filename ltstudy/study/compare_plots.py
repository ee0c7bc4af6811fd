"""`ltstudy compare --plot`: accuracy against density for every row of `compare`, grouped so it can be read.

A row is a combination of the settings and a kind (the ticket, or one of its
controls). Drawn all in one axes, a grid study of 12 combinations beside two
controls is 36 curves in reused colours. Instead:

- with several setting combinations, one panel per kind (the tickets, then each
  control), all on one y axis; in every panel a combination has the same look:
  its colour says the compared settings (`--by`), its line style and marker the
  others (the context), and one legend below the panels says each once;
- with more kinds than setting combinations (a study of methods, such as
  pruning at initialisation, whose comparison is its controls), one panel per
  combination: the ticket beside each control (plots.figure_controls, which
  names a control that falls off the axis).

The curves are the rows' own: ranges are binned as `compare` bins them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from . import plots
from .binning import binned, ranges
from .compare import ACCURACY_KEYS, row_label, setting_order
from .curves import TICKET, Curve
from .trial_results import collect

COLUMNS = 3  # panels per row
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = "osD^vPX*"


def plot_compare(trials: Sequence, by: Sequence[str], path, title: str = "", epsilon: float | None = None,
                 searched: Sequence[str] = (), n_bins: int | None = None, key: str = ACCURACY_KEYS["test"]
                 ) -> bytes | None:
    """The figure of `compare`'s rows (see the module docstring): mean test accuracy at early stop per round with
    its 95% t-interval, against density. Writes `path`, or returns the PNG when it is None."""
    col = collect(trials, [*searched, *by])
    keys = [*by, *[k for k in col.keys if k not in by]]
    bins = ranges([c for c in col.curves if c.kind == TICKET] or col.curves, keys, n_bins)
    curves = binned(col.curves, bins)
    combos = sorted({tuple(c.settings.get(k) for k in keys) for c in curves}, key=setting_order)
    kinds = sorted({c.kind for c in curves}, key=lambda k: (k != TICKET, k)) or [TICKET]  # (nothing finished: one
    # empty panel that says so)
    groups = {combo: {kind: [c for c in curves if c.kind == kind and tuple(c.settings.get(k) for k in keys) == combo]
                      for kind in kinds} for combo in combos}
    if combos and len(kinds) > len(combos) and TICKET in kinds and all(g[TICKET] for g in groups.values()):
        return _by_setting(groups, keys, kinds, path, title, epsilon, key)
    return _by_kind(curves, list(by), keys, combos, kinds, path, title, epsilon, key)


def _by_setting(groups: dict[tuple, dict[str, list[Curve]]], keys, kinds, path, title, epsilon, key) -> bytes | None:
    """Fewer setting combinations than kinds (a study of methods): a panel per combination, its ticket beside each
    control."""
    panels = [(row_label(dict(zip(keys, combo, strict=True)), keys) or "all trials", by_kind[TICKET],
               [(k, by_kind[k]) for k in kinds if k != TICKET and by_kind[k]]) for combo, by_kind in groups.items()]
    if title:
        panels = [(f"{title}: {label}", *rest) for label, *rest in panels]
    return plots.figure_controls(panels, epsilon, key, path=path, explain=True)


FAMILIES = ("Blues", "Oranges", "Greens", "Purples", "Reds")  # one hue per value of the first compared setting


def _looks(keys: Sequence[str], by: Sequence[str], combos: Sequence[tuple]) -> tuple[dict, dict, dict]:
    """Colour per combination of the compared settings, (line style, marker) per combination of the others.

    With two or more compared settings, the first picks the hue (p = 0.2 blues, p = 0.35 oranges, ...) and the
    others its shade, darkest first, so curves of one value read as a family; with one, or more values of the
    first than there are hues, tab10's (or tab20's) distinct colours."""
    import matplotlib

    n_by = len(by)
    compared = sorted({c[:n_by] for c in combos}, key=setting_order)
    context = sorted({c[n_by:] for c in combos}, key=setting_order)
    firsts = sorted({v[:1] for v in compared}, key=setting_order)
    colour: dict[tuple, Any] = {}
    if n_by > 1 and 1 < len(firsts) <= len(FAMILIES):
        for family, first in zip(FAMILIES, firsts):
            members = [v for v in compared if v[:1] == first]
            for i, v in enumerate(members):
                shade = 0.9 - 0.45 * i / max(1, len(members) - 1) if len(members) > 1 else 0.75
                colour[v] = matplotlib.colormaps[family](shade)
    else:
        tab = [c for j, c in enumerate(matplotlib.colormaps["tab10"].colors) if j != 7]  # (grey: the dense line)
        palette = tab if len(compared) <= len(tab) else list(matplotlib.colormaps["tab20"].colors)
        colour = {v: palette[i % len(palette)] for i, v in enumerate(compared)}
    style = {v: (LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)]) for i, v in enumerate(context)}
    return colour, style, {"compared": compared, "context": context}


def _by_kind(curves, by, keys, combos, kinds, path, title, epsilon, key) -> bytes | None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = plots._pyplot()
    n_by = len(by)
    colour, style, levels = _looks(keys, by, combos)
    cols = min(COLUMNS, len(kinds))
    rows = math.ceil(len(kinds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.0 * cols, 3.7 * rows), squeeze=False, sharey=True)
    every = [r["density"] for c in curves for r in c.rounds]
    dense = plots.dense_networks(curves, key)
    ns: set[int] = set()
    for ax, kind in zip(axes.flat, kinds):
        for combo in combos:
            members = [c for c in curves if c.kind == kind and tuple(c.settings.get(k) for k in keys) == combo]
            if not members:
                continue
            ls, marker = style[combo[n_by:]]
            stats = plots.draw_group(ax, members, key, "", color=colour[combo[:n_by]], band=True, linestyle=ls,
                                     marker=marker)
            ns.update(s["n"] for s in stats)
        plots.dense_line(ax, dense, epsilon, legend=False)
        plots.density_axis(ax, every)
        if not curves:
            ax.text(0.5, 0.5, "no finished trials", transform=ax.transAxes, ha="center", color="0.4")
        ax.set_title("tickets" if kind == TICKET else kind, fontsize=9)
    for ax in axes.flat[len(kinds):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{plots.TEST_LABEL}\n({plots.BAND_LABEL})" if key == ACCURACY_KEYS["test"] else key,
                      fontsize=8.5)
    for ax in axes.flat:
        if key in ACCURACY_KEYS.values():
            plots.percent_axis(ax)
    handles: list[Any] = [Line2D([], [], color=colour[v], lw=2.2, label=row_label(dict(zip(by, v, strict=True)), by))
                          for v in levels["compared"]]
    others = keys[n_by:]
    if len(levels["context"]) > 1:
        handles += [Line2D([], [], color="0.2", ls=style[v][0], marker=style[v][1], ms=4,
                           label=row_label(dict(zip(others, v, strict=True)), others)) for v in levels["context"]]
    if dense:
        handles.append(Line2D([], [], color="0.35", ls="--", lw=1.0, label=plots.dense_label(len(dense))))
    if dense and epsilon:
        handles.append(Patch(color="0.6", alpha=0.3, label=f"dense − ε (ε = {epsilon:g}; tickets match on "
                                                           "validation accuracy)"))
    if ns:
        low, high = min(ns), max(ns)
        handles.append(Line2D([], [], ls="", label=f"n = {low} curve per point" if high == 1 else
                              f"n = {low}–{high} curves per point (fewer where marked)" if low != high else
                              f"n = {high} curves per point"))
    ncol = min(4, max(2, math.ceil(len(handles) / 6)))
    what = f"colour: {', '.join(by)}" + (f"; line and marker: {', '.join(others)}" if len(levels["context"]) > 1
                                          else "")
    legend = fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False, title=what,
                        title_fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.canvas.draw()  # (the legend's height, to keep the panels above it)
    tall = legend.get_window_extent().height / fig.dpi + 0.05
    fig.set_figheight(fig.get_figheight() + tall)
    fig.tight_layout(rect=(0, tall / fig.get_figheight(), 1, 1))
    return plots.save(fig, path)
