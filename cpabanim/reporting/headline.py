"""The report's first screen: one table that fits the page, the headline metrics per experiment (mean ± sd over
seeds) with each experiment's paired difference from the reference, its 95 % interval, the relative difference where
it means something and the verdict.

Contract: reads the tables :func:`cpabanim.reporting.comparison.comparison_tables` made (the summary's cells and
the comparison's rows: nothing is computed again here) and returns an HTML fragment; all text escaped.

Results by motion size (issue 35): :func:`motion_bins` lists the groups of frames shown side by side under each
metric: every frame pooled, and the bin of the largest motions (``tables.by_motion``'s last,
:mod:`cpabanim.reporting.motion`: tables computed on those frames alone) where the runs have motion sizes; the
second header row appears by itself. The other bins are in the folded section "Results by motion size".
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from cpabanim.reporting.comparison import Cell, ComparisonTables, Table, metric_label
from cpabanim.reporting.stats import BETTER, WORSE

# the metrics a reader looks at first, in this order, where the runs have them: reconstruction error, the keypoints'
# and the identity's distance, the perceptual distance, and the animation's motion transfer (docs/evaluation.md)
HEADLINE_METRICS = ("recon/l1", "recon/lpips", "recon/akd", "recon/aed", "anim/relative/transfer_motion")
POOLED = "all frames"
VALUE_NOTE = "Each cell: mean ± sd over seeds (n=1: one seed; the best mean on green)."
VERSUS_NOTE = (
    "Under it, the difference from {reference} on the same videos or pairs [95 % bootstrap interval], the relative "
    "difference where it means something (a metric that cannot be negative, with a reference clearly above 0), and "
    "the verdict: better / worse when the interval lies entirely on one side of 0."
)
COVERAGE_NOTE = "Evaluated on: {coverage} per seed. Every metric, the per-seed and per-video tables are below."
SHORT_UNDECIDED = "n.d."  # no verdict; the footnote gives the whole sentence (how many videos, why none)


@dataclass(frozen=True)
class Bin:
    """A group of frames the first screen shows under each metric: its ``label`` and the tables computed on it."""

    label: str
    tables: ComparisonTables


def motion_bins(tables: ComparisonTables) -> list[Bin]:
    """The groups of frames, left to right under each metric: every frame pooled, then the largest motions."""
    return [Bin(POOLED, tables), *(Bin(label, t) for label, t in tables.by_motion[-1:])]


def headline_metrics(tables: ComparisonTables) -> list[str]:
    """:data:`HEADLINE_METRICS` that the summary has, in that order."""
    return [metric for metric in HEADLINE_METRICS if metric in tables.summary.columns]


def summary_cell(summary: Table, name: str, metric: str) -> Cell:
    """The cell of row ``name`` (an experiment or baseline row) on ``metric``; n/a where a bin has none."""
    row = next((r for r in summary.rows if r[0].text == name), None)
    return row[summary.columns.index(metric)] if row is not None and metric in summary.columns else Cell("n/a")


def comparison_row(comparison: Table | None, experiment: str, metric: str) -> dict[str, Cell] | None:
    """The comparison's cells (by column name) of ``experiment`` on ``metric``; None for the reference or without a
    comparison."""
    if comparison is None:
        return None
    for row in comparison.rows:
        if row[0].text == experiment and row[1].name == metric:
            return dict(zip(comparison.columns, row))
    return None


class Footnotes:
    """The verdicts that are not ``better`` / ``worse``, numbered in order of appearance (one number per sentence)."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"<sup>{self.texts.index(text) + 1}</sup>"

    def html(self) -> str:
        return "".join(f"<br><sup>{i}</sup> {html.escape(t)}" for i, t in enumerate(self.texts, start=1))


def verdict_html(text: str, notes: Footnotes) -> str:
    if text in (BETTER, WORSE):
        return f'<span class="{text}">{text}</span>'
    return f'<span class="undecided" title="{html.escape(text)}">{SHORT_UNDECIDED}{notes.mark(text)}</span>'


def short(value: float, digits: int = 3, sign: bool = False) -> str:
    """A number as the first screen shows it: ``digits`` significant digits, trailing zeros kept (7.00, not 7, beside
    7.12); the tables below have 4."""
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:+#.{digits}g}" if sign else f"{value:#.{digits}g}"
    return text.removesuffix(".")  # 100. -> 100


def nobreak(*parts: str) -> str:
    """Pieces (already escaped) that the browser may put on separate lines, each kept whole: the first screen's
    columns narrow to the window instead of scrolling it."""
    return " ".join(f'<span class="nw">{part}</span>' for part in parts)


def value_html(value: Cell) -> str:
    """mean ± sd over seeds (3 and 2 significant digits), ``(n=1)`` for one seed; a baseline's value; else the text."""
    numbers = dict(value.numbers)
    if "mean" in numbers:
        mean, sd, n = numbers["mean"], numbers["sd"], numbers["n"]
        if n == 0:
            return "n/a"
        return nobreak(short(mean), f"± {short(sd, 2)}" if n > 1 else "(n=1)")
    return short(numbers["value"]) if "value" in numbers else html.escape(value.text)


def versus_html(versus: dict[str, Cell], notes: Footnotes) -> str:
    """difference [95 % interval] (2 significant digits), the relative difference where shown, the verdict."""
    numbers = dict(versus["difference"].numbers)
    if not numbers:
        parts = [html.escape(versus["difference"].text)]
    else:
        low, high = numbers["low"], numbers["high"]
        interval = f"[{short(low, 2, True)}, {short(high, 2, True)}]" if math.isfinite(low) else "[n/a]"
        parts = [short(numbers["difference"], 2, True), interval]
    if versus["relative"].numbers:  # shown only where it means something (the comparison decided)
        parts.append(html.escape(versus["relative"].text))
    return nobreak(*parts, verdict_html(versus["verdict"].text, notes))


def cell_html(value: Cell, versus: dict[str, Cell] | None, is_reference: bool, notes: Footnotes) -> str:
    """One experiment's cell: the mean ± sd, then (against the reference) difference [interval], relative, verdict;
    short numbers (the full ones are the cell's tooltip and in the tables below)."""
    top = f'<div class="value">{value_html(value)}</div>'
    if is_reference:
        return top + '<div class="vs">reference</div>'
    if versus is None:
        return top
    return top + f'<div class="vs">{versus_html(versus, notes)}</div>'


def cell_title(value: Cell, versus: dict[str, Cell] | None) -> str:
    """The cell's full numbers, shown on hover: the tables' own text."""
    texts = [value.text] + ([versus["difference"].text] if versus else [])
    return html.escape(" ".join(t for t in texts if t), quote=True)


def first_screen(tables: ComparisonTables) -> str:
    """The first-screen table (HTML) and its note: rows = experiments, then the no-motion baseline row(s); columns =
    seeds and, per headline metric, one column per :func:`motion_bins` bin."""
    bins, metrics, notes = motion_bins(tables), headline_metrics(tables), Footnotes()
    reference = tables.reference if tables.comparison is not None else None
    summary = tables.summary
    head = "<th>experiment</th><th>seeds</th>" + "".join(
        f'<th colspan="{len(bins)}">{html.escape(metric_label(m))}</th>' for m in metrics
    )
    if len(bins) > 1:
        labels = "".join(f"<th>{html.escape(b.label)}</th>" for _ in metrics for b in bins)
        head = f'<tr>{head}</tr><tr><th colspan="2"></th>{labels}</tr>'
    else:
        head = f"<tr>{head}</tr>"
    body = []
    for cells, kind in zip(summary.rows, summary.kinds):
        name = cells[0].text
        tds = [f"<td>{html.escape(name)}</td><td>{html.escape(cells[1].text)}</td>"]
        for metric in metrics:
            for b in bins:
                value = summary_cell(b.tables.summary, name, metric)
                versus = comparison_row(b.tables.comparison, name, metric) if kind != "baseline" else None
                content = cell_html(value, versus, kind != "baseline" and name == reference, notes)
                best = ' class="best"' if value.best else ""
                tds.append(f'<td{best} title="{cell_title(value, versus)}">{content}</td>')
        body.append((f'<tr class="{kind}">' if kind else "<tr>") + "".join(tds) + "</tr>")
    # the note below the table, not in it: the table stays as narrow as its numbers
    note = f'<p class="headline-note">{headline_note(tables, reference)}{notes.html()}</p>'
    caption = "At a glance: headline metrics" + (f", each experiment against {reference}" if reference else "")
    return (
        f'<table class="cpabanim-table headline" data-table="headline"><caption>{html.escape(caption)}</caption>'
        f"<thead>{head}</thead><tbody>{''.join(body)}</tbody></table>{note}"
    )


def headline_note(tables: ComparisonTables, reference: str | None) -> str:
    """What a cell shows, what the experiments were scored on, and why there is no comparison where there is none."""
    summary = tables.summary
    column = summary.columns.index("evaluated_on")
    coverage = distinct(row[column].text for row, kind in zip(summary.rows, summary.kinds) if kind != "baseline")
    versus = VERSUS_NOTE.format(reference=reference) if reference else tables.reference_note
    return html.escape(" ".join([VALUE_NOTE, versus, COVERAGE_NOTE.format(coverage=" | ".join(coverage))]))


def distinct(texts: Sequence[str] | object) -> list[str]:
    """The texts, each once, in order of appearance."""
    return list(dict.fromkeys(texts))  # type: ignore[arg-type]
