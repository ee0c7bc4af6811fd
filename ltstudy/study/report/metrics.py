"""The report's section on the rounds' metrics: every number a round carries beyond its fixed fields (compression,
FLOPs, stability, a plugin's own), read at each row's ticket round."""

from __future__ import annotations

from collections.abc import Iterable

from ...engine.rounds import FIELDS
from ..compare import Comparison, metric_key, round_numbers
from ..curves import Curve
from .html import e, missing, table


def open_metrics(curves: Iterable[Curve]) -> list[str]:
    """The metrics the rounds carry (`RoundResult.metrics`' keys, as stored), not their fixed fields."""
    return [k for k in round_numbers(curves) if k not in FIELDS]


def section_metrics(cmp: Comparison) -> str:
    head = "<h2>Round metrics at the ticket</h2>"
    if not cmp.rows or not cmp.metrics:
        return head + missing("The trials' rounds carry no metric beyond their fixed fields.")
    keys = cmp.by + cmp.context
    spread = not cmp.single
    rows = [[*(r[k] for k in keys), r["kind"].removeprefix("control: "), r["n"],
             *(_cell(r, metric_key(m), r["n"], spread) for m in cmp.metrics)] for r in cmp.rows]
    return (head + "<p>Every number the rounds carry besides their fixed fields (the compression and FLOPs of each "
            "round, its instability where [stability] measured it, and any metric a plugin registered), at each "
            "curve's ticket round (the sparsest round within ε of dense), "
            + ("one curve per row." if cmp.single else "mean ± std over the row's curves.")
            + " A metric a round did not measure counts as missing, so its n can be smaller than the row's: "
            + e(", ".join(cmp.metrics)) + ".</p>"
            + table([*keys, "ticket or control", "n", *(m.replace("_", " ") for m in cmp.metrics)], rows,
                    table_id="metrics",
                    numeric=[False] * (len(keys) + 1) + [True] * (1 + len(cmp.metrics))))


def _cell(r: dict, key: str, row_n: int, spread: bool) -> str:
    """'3.25 ± 0.1' in 4 significant digits, a count as '50,610' (metrics span FLOP counts to fractions); its n
    where it is not the row's."""
    mean, std, n = r[key], r[f"{key}_std"], r[f"{key}_n"]
    if mean is None:
        return "n/a"
    text = (f"{mean:,.0f}" if float(mean).is_integer() and abs(mean) < 1e12 else f"{mean:.4g}") + (
        f" ± {std:.2g}" if spread and std is not None else "")
    return text + (f" ({n})" if n != row_n else "")
