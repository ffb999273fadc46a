"""The report's HTML page: the parameter table, the tables over seeds, the figures, and a link to the videos page,
in one self-contained file that opens offline.

Contract: reads the markdown table :func:`cpabanim.reporting.tables.write_tables` returned, the tables of
:func:`cpabanim.reporting.comparison.comparison_tables` (as HTML fragments) and the PNGs named in the report's
outputs (``metrics_png``, ``loss_png``, ``samples_png``), embedded as data URIs; the videos page
(``videos_html``) is linked, beside it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cpabanim.reporting.comparison import ComparisonTables, to_html
from cpabanim.reporting.tables import BASELINE_ROW, TABLE_NOTE

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 7px;font-size:90%}tr.baseline{color:#555;font-style:italic}"
    "td.best{background:#e6f4e6}caption{text-align:left;font-weight:bold;padding:.3em 0}"
    "td.note{border:none;color:#555;font-size:85%}img{max-width:100%}details{margin:1em 0}"
)


def parameter_table(table_md: str) -> str:
    """The markdown parameter table of the experiments as an HTML table, with its note."""
    lines = [line.strip("|").split("|") for line in table_md.splitlines() if not line.startswith("|---")]
    head, body = lines[0], lines[1:]
    table = "<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"
    table += "".join(
        ("<tr class='baseline'>" if row[0].strip().startswith(BASELINE_ROW) else "<tr>")
        + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row)
        + "</tr>"
        for row in body
    )
    return table + f"</table><p>{html.escape(TABLE_NOTE.replace('*', '').replace('`', ''))}</p>"


def figure(outputs: dict[str, Path], key: str, title: str) -> str:
    data = base64.b64encode(outputs[key].read_bytes()).decode()
    return f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{data}'>"


def write_html(table_md: str, tables: ComparisonTables, outputs: dict[str, Path], path: Path) -> None:
    """One self-contained page (figures embedded as data URIs) that opens offline: the comparison over seeds
    first (summary, paired differences against the reference, per seed), the parameters, the figures, the
    per-video tables folded, and the link to the videos page."""
    videos = html.escape(outputs["videos_html"].name)
    parts = [
        f"<p><a href='{videos}'>Videos side by side</a>: every test video and animation pair, the experiments "
        "playing together.</p>",
        to_html(tables.summary),
        to_html(tables.comparison) if tables.comparison else f"<p>{html.escape(tables.reference_note)}</p>",
        to_html(tables.per_seed),
        "<h2>Parameters</h2>" + parameter_table(table_md),
        figure(outputs, "metrics_png", "Metrics (mean over seeds)"),
        figure(outputs, "loss_png", "Training losses"),
        figure(outputs, "samples_png", "Samples"),
        "<details><summary>Per video</summary>" + "".join(to_html(t) for t in tables.per_video) + "</details>",
    ]
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>cpabanim experiments</title>"
        f"<style>{STYLE}</style></head><body><h1>cpabanim: experiments side by side</h1>{''.join(parts)}"
        "</body></html>\n"
    )
