"""The report's HTML page, in one self-contained file that opens offline: first what a reader came for, then the
rest folded.

First screen: a line of links (the videos page first), then :func:`cpabanim.reporting.headline.first_screen`: the
headline metrics per experiment with the verdicts against the reference, one table that fits the page. Below it,
folded (``<details>``, opened by a link to them): every metric over seeds, the paired comparison of every metric,
per seed, the parameters, the per-metric plots, the results by motion size (a plot of the headline metrics per bin
and every bin's tables, where the runs have motion sizes), the training losses; then the samples; the per-video
tables last.

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
from cpabanim.reporting.headline import first_screen, headline_metrics
from cpabanim.reporting.motion import motion_section, plot_by_motion
from cpabanim.reporting.tables import BASELINE_ROW, TABLE_NOTE

STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 7px;font-size:90%}tr.baseline{color:#555;font-style:italic}"
    "td.best{background:#e6f4e6}caption{text-align:left;font-weight:bold;padding:.3em 0}"
    "td.note{border:none;color:#555;font-size:85%}img{max-width:100%}details{margin:1em 0}"
    "summary{cursor:pointer;font-weight:bold;font-size:110%}.scroll{overflow-x:auto}"
    "nav{margin:0 0 1em;font-size:95%}nav a.videos{font-weight:bold;font-size:110%}"
    "table.headline{margin-bottom:.3em}table.headline td{vertical-align:top;padding:4px 6px}.nw{white-space:nowrap}"
    ".headline-note{color:#555;font-size:85%;max-width:80em;margin:0 0 1.5em}"
    ".value{font-size:105%}.vs{font-size:80%;color:#333}"
    ".better{color:#176c2c;font-weight:bold}.worse{color:#b00020;font-weight:bold}.undecided{color:#666}"
)
# a link to a folded section opens it (the page is read offline: no library, a few lines)
OPEN_LINKED = (
    "<script>function openLinked(){var t=document.getElementById(location.hash.slice(1));"
    "if(t&&t.tagName==='DETAILS'){t.open=true;}}window.addEventListener('hashchange',openLinked);openLinked();</script>"
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
    return f"<img alt='{title}' src='data:image/png;base64,{data}'>"


def folded(anchor: str, title: str, content: str) -> str:
    """A ``<details>`` section, closed, that the link ``#anchor`` opens; wide tables scroll inside it."""
    return (
        f"<details id='{anchor}'><summary>{html.escape(title)}</summary><div class='scroll'>{content}</div></details>"
    )


def motion_html(tables: ComparisonTables) -> str:
    """The plot of the headline metrics per motion-size bin (embedded), then each bin's tables."""
    png = plot_by_motion(tables, headline_metrics(tables))
    image = f"<img alt='By motion size' src='data:image/png;base64,{base64.b64encode(png).decode()}'>" if png else ""
    return motion_section(tables, image)


def navigation(videos: str) -> str:
    """The line of links at the top: the videos page first, then the folded sections below."""
    links = [("#tables", "every metric over seeds"), ("#plots", "per-metric plots"), ("#samples", "samples")]
    links += [("#parameters", "parameters"), ("#losses", "training losses"), ("#per-video", "per video")]
    jumps = " · ".join(f"<a href='{href}'>{text}</a>" for href, text in links)
    return (
        f"<nav><a class='videos' href='{videos}'>▶ Videos side by side</a> (every test video and animation pair, "
        f"the experiments playing together) · {jumps}</nav>"
    )


def write_html(table_md: str, tables: ComparisonTables, outputs: dict[str, Path], path: Path) -> None:
    """One self-contained page (figures embedded as data URIs) that opens offline (module docstring)."""
    comparison = to_html(tables.comparison) if tables.comparison else f"<p>{html.escape(tables.reference_note)}</p>"
    parts = [
        navigation(html.escape(outputs["videos_html"].name)),
        first_screen(tables),
        folded(
            "tables",
            "Every metric: over seeds, against the reference, per seed",
            to_html(tables.summary) + comparison + to_html(tables.per_seed),
        ),
        folded("parameters", "Parameters", parameter_table(table_md)),
        folded("plots", "Per-metric plots (mean over seeds)", figure(outputs, "metrics_png", "Metrics")),
        *([folded("motion", "Results by motion size", motion_html(tables))] if tables.by_motion else []),
        folded("losses", "Training losses", figure(outputs, "loss_png", "Training losses")),
        f"<h2 id='samples'>Samples</h2>{figure(outputs, 'samples_png', 'Samples')}",
        folded("per-video", "Per video", "".join(to_html(t) for t in tables.per_video)),
    ]
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>cpabanim experiments</title>"
        f"<style>{STYLE}</style></head><body><h1>cpabanim: experiments side by side</h1>{''.join(parts)}"
        f"{OPEN_LINKED}</body></html>\n"
    )
