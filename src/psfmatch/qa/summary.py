"""The run summary as a self-contained HTML table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ['summary_html']


# ---------------------------------------------------------------------- summary
def summary_html(rows: Sequence[Mapping[str, Any]], *, columns: Sequence[str],
                 title: str = "psfmatch run summary") -> str:
    """A self-contained HTML table of the per-pair summary rows (no scripts, no links).

    Rows whose ``status`` is not ``ok`` are highlighted.
    """
    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.6g}"
        return escape(str(value))

    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        style = "" if row.get("status") == "ok" else ' class="notok"'
        body.append(f"<tr{style}>" + "".join(f"<td>{cell(row.get(c))}</td>" for c in columns)
                    + "</tr>")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><style>"
        "body{font-family:sans-serif;font-size:13px}"
        "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 6px;"
        "text-align:left;vertical-align:top}th{background:#eee}"
        "tr.notok td{background:#fdd}</style></head><body>"
        f"<h2>{escape(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>"
        + "".join(body) + "</tbody></table></body></html>\n"
    )
