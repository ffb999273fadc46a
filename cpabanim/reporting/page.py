"""The report's HTML page: the comparison table and the figures in one self-contained file that opens offline.

Contract: reads the markdown table :func:`cpabanim.reporting.tables.write_tables` returned and the PNGs named in
the report's outputs (``metrics_png``, ``loss_png``, ``samples_png``), embeds them as data URIs.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from cpabanim.reporting.tables import BASELINE_ROW, TABLE_NOTE


def write_html(table_md: str, outputs: dict[str, Path], path: Path) -> None:
    """One self-contained page (figures embedded as data URIs) that opens offline."""
    lines = [line.strip("|").split("|") for line in table_md.splitlines() if not line.startswith("|---")]
    head, body = lines[0], lines[1:]
    table = "<table><tr>" + "".join(f"<th>{html.escape(c.strip())}</th>" for c in head) + "</tr>"
    table += "".join(
        ("<tr class='baseline'>" if row[0].strip().startswith(BASELINE_ROW) else "<tr>")
        + "".join(f"<td>{html.escape(c.strip())}</td>" for c in row)
        + "</tr>"
        for row in body
    )
    table += f"</table><p>{html.escape(TABLE_NOTE.replace('*', '').replace('`', ''))}</p>"
    figures = ""
    for key, title in (("metrics_png", "Metrics"), ("loss_png", "Training loss"), ("samples_png", "Samples")):
        data = base64.b64encode(outputs[key].read_bytes()).decode()
        figures += f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{data}'>"
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px}tr.baseline{color:#555;font-style:italic}img{max-width:100%}"
    )
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>cpabanim experiments</title>"
        f"<style>{style}</style></head><body><h1>cpabanim: experiments side by side</h1>{table}{figures}"
        "</body></html>\n"
    )
