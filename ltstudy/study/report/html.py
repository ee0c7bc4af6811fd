"""HTML pieces of the report: the inline CSS, escaping, tables, figures (PNG embedded as base64) and notes."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

from ..stats import Stat

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:96vw;
padding:0 1.2rem;color:#1d1d1f;line-height:1.45}
p,ul,figcaption,details{max-width:1100px}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.25rem;margin-top:2.2rem;border-bottom:1px solid #ddd;
padding-bottom:.2rem}h3{font-size:1.05rem;margin-top:1.4rem}
.meta{color:#555;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.8rem}
th,td{border:1px solid #d5d5d5;padding:.2rem .35rem;text-align:left;vertical-align:top}td{white-space:nowrap}
th{background:#f3f3f3;white-space:normal;min-width:3.5rem}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:.8rem 0 1.4rem}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444;max-width:980px}
.note{background:#fff8e1;border-left:3px solid #f0b400;padding:.4rem .7rem;font-size:.9rem}
.missing{color:#666;font-style:italic}
ul.notes{font-size:.85rem}
.scroll{overflow-x:auto}
"""


def e(x: Any) -> str:
    return html.escape(str(x))


def pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v * 100:.{digits}f}"


def img(png: bytes, alt: str) -> str:
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def figure(png: bytes, alt: str, caption: str) -> str:
    return f"<figure>{img(png, alt)}<figcaption>{caption}</figcaption></figure>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], table_id: str = "",
          row_attrs: Iterable[str] | None = None, numeric: Sequence[bool] | None = None) -> str:
    rows = list(rows)
    attrs = list(row_attrs) if row_attrs is not None else [""] * len(rows)
    numeric = numeric or [False] * len(headers)
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        f"<tr{a}>" + "".join(f'<td class="num">{e(v)}</td>' if num else f"<td>{e(v)}</td>"
                             for v, num in zip(r, numeric)) + "</tr>"
        for r, a in zip(rows, attrs))
    tid = f' id="{table_id}"' if table_id else ""
    return f'<div class="scroll"><table{tid}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def missing(sentence: str) -> str:
    return f'<p class="missing">{e(sentence)}</p>'


def fmt(v: float) -> str:
    return f"{v:.4g}"


def setting(v: Any) -> str:
    """A setting's value in a table: a float from a searched range to 4 significant digits, else as it is."""
    return fmt(v) if isinstance(v, float) else str(v)


def describe_param(p) -> tuple[str, str]:
    if p.choices is not None:
        return "choices", ", ".join(map(str, p.choices))
    if p.low is not None:
        extra = (f", step {p.step}" if p.step else "") + (", log scale" if p.log else "")
        return "range", f"[{p.low}, {p.high}]{extra}"
    return "fixed", str(p.fixed)


def stat_cell(r: dict, name: str, scale: float = 100.0, digits: int = 1, row_n: int | None = None,
              spread: bool = True) -> str:
    """'59.0 ± 1.2 (3)'; with `row_n`, the n only where it differs from the row's (a density some curves
    do not reach), so a wide table stays readable; without `spread` (every row is one curve, said once), '59.0'."""
    n = r[f"{name}_n"]
    return Stat(r[name], r[f"{name}_std"], n).text(scale, digits, show_n=row_n is None or n != row_n, spread=spread)
