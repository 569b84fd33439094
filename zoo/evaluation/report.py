"""One self-contained HTML page of figures and a summary table (the evaluation's and the training's reports)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence


def write_html(path: str | Path, figures: Sequence[Any], title: str, summary: dict[str, Any] | None = None) -> Path:
    """One self-contained HTML page (plotly.js embedded: it opens offline) with the figures and a summary table."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{title}</h1>"]
    if summary:
        rows = "".join(f"<tr><td>{k}</td><td>{format_value(v)}</td></tr>" for k, v in summary.items())
        parts.append(f"<table border='1' cellpadding='4'>{rows}</table>")
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    html = ("<!doctype html><html><head><meta charset='utf-8'><title>" + title + "</title></head><body>"
            + "\n".join(parts) + "</body></html>")
    tmp = path.with_name(path.name + ".tmp")  # written whole, then renamed: never a half-written report
    tmp.write_text(html)
    tmp.replace(path)
    return path


def format_value(v: Any) -> str:
    """A metric as text: floats to 4 decimals, None or NaN as "n/a", a dict as "key: value, …"."""
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {format_value(x)}" for k, x in v.items())
    return "n/a" if v is None else str(v)
