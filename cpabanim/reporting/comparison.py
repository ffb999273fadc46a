"""The report's tables over experiments and seeds, from plain inputs, as markdown, HTML fragments and a tidy CSV.

:func:`comparison_tables`: ``runs`` (experiment -> seed -> its ``metrics.json`` numbers), ``per_video``
(experiment -> seed -> the rows of its ``metrics_per_video.csv`` as ``csv.DictReader`` gives them), ``reference``
(None: no comparison) -> the summary (mean ± sd over seeds, baseline rows), the paired comparison with the
reference (:func:`cpabanim.reporting.stats.paired_difference`), per seed, per video (one table per metric).
Columns: reconstruction, then animation of motion transfer (akd, mkr, transfer_*), then identity (aed, then
``l1_first``: first animated frame vs source image, 0 = source unchanged). Numbers: 4 significant digits.
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cpabanim.reporting.stats import paired_difference, summarize
from cpabanim.reporting.tables import (
    ARROWS,
    BASELINE_ROW,
    baseline_rows,
    lower_is_better,
    metric_columns,
    metric_rank,
    relative_shown,
)

Runs = Mapping[str, Mapping[int, Mapping[str, float]]]
Rows = Mapping[int, Sequence[Mapping[str, str]]]  # seed -> the rows of its per-video CSV
PerVideo = Mapping[str, Rows]

UNIT_NAMES = {"reconstruction": "videos", "animation": "pairs"}
L1_FIRST_LABEL = "(identity kept: 1st animated frame vs source, 0 = unchanged)"
SUMMARY_NOTE = (
    "mean ± sd over seeds (ddof=1; n=1: one seed). ↓ lower, ↑ higher is better; the best experiment per column is "
    "marked, never a baseline. baseline: no motion, on the same frames: the source frame copied as every prediction "
    "/ the source image unchanged (l1_first, aed_source 0 by construction). evaluated on: per seed."
)
COMPARISON_NOTE = (
    "candidate − reference: mean over the (video or pair, seed) pairs both have [95 % bootstrap CI, BCa, whole videos "
    "or pairs resampled with their seeds]; better / worse: the CI is entirely on the good / bad side of 0; relative: "
    "% of the reference's mean, only for a metric that cannot be negative whose reference is clearly above 0 (else —: "
    "a % would magnify noise near 0 or turn its sign); frames: per seed. The CI leaves out the seed-to-seed spread of "
    "the models (± sd)."
)
PER_SEED_NOTE = "One row per trained seed; the best run per column is marked."
PER_VIDEO_NOTE = "Mean over seeds per video (or pair and mode); the best experiment per row is marked."


@dataclass(frozen=True)
class Cell:
    """One cell: its ``text``, the named numbers behind it (the first ranks it: ``mean``, ``value``) and, where the
    text is a label, the ``name`` a CSV key gives (``recon/l1`` for ``recon/l1 ↓``)."""

    text: str
    numbers: tuple[tuple[str, float], ...] = ()
    best: bool = False
    name: str = ""


@dataclass(frozen=True)
class Table:
    """``columns`` (CSV names), ``labels`` (headers): (C,); ``rows``: (R, C) cells; ``kinds``: (R,), ``"baseline"``
    for a no-motion row else ``""``; ``keys``: how many leading columns name a row; ``name``: the CSV ``table``."""

    name: str
    title: str
    columns: tuple[str, ...]
    labels: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    kinds: tuple[str, ...]
    keys: int
    note: str = ""


@dataclass(frozen=True)
class ComparisonTables:
    """Every table of the report; ``comparison`` (against ``reference``) None with ``reference_note`` saying why."""

    summary: Table
    comparison: Table | None
    per_seed: Table
    per_video: tuple[Table, ...]
    reference_note: str = ""
    reference: str | None = None
    by_motion: tuple[tuple[str, ComparisonTables], ...] = ()  # (label, the tables of a motion-size bin's frames)

    def all(self) -> list[Table]:
        return [self.summary, *([self.comparison] if self.comparison else []), self.per_seed, *self.per_video]


def comparison_tables(runs: Runs, per_video: PerVideo, reference: str | None) -> ComparisonTables:
    """All tables for ``runs`` (experiment -> seed -> metrics) and ``per_video`` (experiment -> seed -> CSV rows),
    compared with ``reference`` when it is one of the experiments."""
    columns = ordered_metrics(runs)
    note = reference_note(reference, list(runs))
    comparison = None if note else comparison_table(runs, per_video, columns, reference)
    summary, per_seed = summary_table(runs, per_video, columns, note), per_seed_table(runs, columns)
    return ComparisonTables(summary, comparison, per_seed, per_video_tables(per_video, columns), note, reference)


def reference_note(reference: str | None, names: list[str]) -> str:
    """Why there is no comparison column ("" when there is one)."""
    if reference is None:
        return "No comparison with a reference: no reference experiment was given."
    missing = f"No comparison with a reference: {reference!r} is not one of the experiments ({', '.join(names)})."
    return "" if reference in names else missing


def ordered_metrics(runs: Runs) -> list[str]:
    """The model metrics of every run (no baselines, no frame counts) in the order of the module docstring."""
    flat = {f"{name}/{seed}": dict(m) for name, seeds in runs.items() for seed, m in seeds.items()}
    return sorted((m for m in metric_columns(flat) if not m.endswith("/frames")), key=metric_rank)


def metric_label(metric: str) -> str:
    """``recon/l1 ↓``; ``l1_first`` says what it measures, so it is never read as motion transfer."""
    label = f"{metric} {ARROWS[lower_is_better(metric)]}"
    return f"{label} {L1_FIRST_LABEL}" if metric.endswith("/l1_first") else label


def locate(metric: str) -> tuple[str, str, str] | None:
    """Where ``metric`` is in the per-video CSV: (part, mode, column); None when it is pooled only (``recon/fid``).
    ``recon/l1`` -> (reconstruction, "", l1); ``anim/relative/akd_driving`` -> (animation, relative, akd_driving)."""
    parts = metric.split("/")
    if parts[0] == "recon" and len(parts) == 2 and parts[1] != "fid":
        return "reconstruction", "", parts[1]
    if parts[0] == "anim" and len(parts) == 3:
        return "animation", parts[1], parts[2]
    return None


def as_float(text: object) -> float:
    """A CSV cell as a number; NaN when empty or not a number."""
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def column_values(rows_by_seed: Rows, part: str, column: str) -> dict[tuple[str, str, int], float]:
    """``{(unit, mode, seed): value}`` of one CSV column in the rows of ``part`` (finite values only)."""
    found = ((row, seed) for seed, rows in rows_by_seed.items() for row in rows if row.get("part") == part)
    values = {(row["video"], row.get("mode", ""), seed): as_float(row.get(column)) for row, seed in found}
    return {key: value for key, value in values.items() if math.isfinite(value)}


def unit_values(rows_by_seed: Rows, part: str, mode: str, column: str) -> dict[tuple[str, int], float]:
    """``{(unit, seed): value}`` of one CSV column in the rows of ``part`` and ``mode`` (finite values only)."""
    return {(unit, seed): v for (unit, m, seed), v in column_values(rows_by_seed, part, column).items() if m == mode}


def frames_by_unit(rows_by_seed: Rows, part: str) -> dict[str, int]:
    """Frames of each video (or pair) of ``part``: the most any seed or mode scored."""
    frames: dict[str, int] = {}
    for (unit, _mode, _seed), count in column_values(rows_by_seed, part, "frames").items():
        frames[unit] = max(frames.get(unit, 0), int(count))
    return frames


def coverage(rows_by_seed: Rows) -> str:
    """``8 videos, 400 frames; 12 pairs, 600 frames``: what each seed was scored on."""
    found = [(frames_by_unit(rows_by_seed, part), name) for part, name in UNIT_NAMES.items()]
    text = "; ".join(f"{len(f)} {name}, {sum(f.values())} frames" for f, name in found if f)
    return text or "no per-video rows"


def fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "n/a"


def number(value: float) -> Cell:
    return Cell(fmt(value), (("value", value),))


def mark_best(rows: list[list[Cell]], kinds: Sequence[str], cells: Sequence[tuple[int, int]], lower: bool) -> None:
    """Mark, in place, the best first number among ``cells`` ((row, column) pairs; baseline rows skipped)."""
    ranked = {(r, c): rows[r][c].numbers[0][1] for r, c in cells if kinds[r] != "baseline" and rows[r][c].numbers}
    finite = [value for value in ranked.values() if math.isfinite(value)]
    target = (min(finite) if lower else max(finite)) if finite else None
    for r, c in (key for key, value in ranked.items() if value == target):
        rows[r][c] = replace(rows[r][c], best=True)


def freeze(name, title, columns, labels, rows, kinds, keys, note) -> Table:
    return Table(name, title, tuple(columns), tuple(labels), tuple(map(tuple, rows)), tuple(kinds), keys, note)


def summary_table(runs: Runs, per_video: PerVideo, columns: list[str], note: str) -> Table:
    """One row per experiment (seeds, coverage, mean ± sd of each metric), the baseline row(s); best means marked."""
    rows: list[list[Cell]] = []
    for name, seeds in runs.items():
        stats = [summarize(m[c] for m in seeds.values() if c in m) for c in columns]
        head = [Cell(name), Cell(", ".join(map(str, sorted(seeds)))), Cell(coverage(per_video.get(name, {})))]
        rows.append(head + [Cell(s.format(), (("mean", s.mean), ("sd", s.sd), ("n", s.n))) for s in stats])
    # median: of equal values it is that value to the bit (a mean may not be), so equal baselines make one row
    medians = {n: baseline_medians(seeds) for n, seeds in runs.items()}
    for label, values in baseline_rows(list(runs), medians, columns):
        cells = [number(values[c]) if c in values else Cell("") for c in columns]
        rows.append([Cell(label), Cell(""), Cell("")] + cells)
    kinds = [""] * len(runs) + ["baseline"] * (len(rows) - len(runs))
    for c, metric in enumerate(columns, start=3):
        mark_best(rows, kinds, [(r, c) for r in range(len(rows))], lower_is_better(metric))
    names, labels = ["experiment", "seeds", "evaluated_on", *columns], ["experiment", "seeds", "evaluated on"]
    labels += map(metric_label, columns)
    return freeze("summary", "Experiments over seeds", names, labels, rows, kinds, 1, f"{SUMMARY_NOTE} {note}".strip())


def baseline_medians(seeds: Mapping[int, Mapping[str, float]]) -> dict[str, float]:
    """Per metrics.json key, the median over seeds (the baseline keys are what :func:`baseline_rows` reads)."""
    keys = sorted({k for m in seeds.values() for k in m})
    return {k: float(np.median([m[k] for m in seeds.values() if k in m])) for k in keys}


def comparison_table(runs: Runs, per_video: PerVideo, columns: list[str], reference: str) -> Table:
    """Per other experiment and metric: the paired difference with ``reference`` [95 % CI], relative, verdict and
    the numbers behind it (videos or pairs, seeds, frames per seed)."""
    pairs = [(name, metric) for name in runs if name != reference for metric in columns]
    rows = [comparison_row(n, m, per_video.get(n, {}), per_video.get(reference, {})) for n, m in pairs]
    names = ["experiment", "metric", "difference", "relative", "verdict", "units", "seeds", "frames"]
    labels = [*names[:2], f"difference vs {reference} [95 % CI]", "relative", "verdict", "videos / pairs", *names[6:]]
    return freeze("comparison", f"Against {reference}", names, labels, rows, [""] * len(rows), 2, COMPARISON_NOTE)


def comparison_row(name: str, metric: str, candidate: Rows, reference: Rows) -> list[Cell]:
    """One row of :func:`comparison_table`; a pooled-only metric says it is not compared."""
    label, place = Cell(metric_label(metric), name=metric), locate(metric)
    if place is None:
        return [Cell(name), label, Cell("n/a"), Cell(""), Cell("not compared: pooled only")]
    part, mode, column = place
    ours, theirs = unit_values(candidate, part, mode, column), unit_values(reference, part, mode, column)
    result = paired_difference(ours, theirs, lower_is_better=lower_is_better(metric), unit_name=UNIT_NAMES[part])
    paired = {unit for unit, _seed in ours.keys() & theirs.keys()}
    interval = f"[{result.low:+.4g}, {result.high:+.4g}]" if math.isfinite(result.low) else "[n/a]"
    numbers = (("difference", result.difference), ("low", result.low), ("high", result.high))
    relative = Cell(f"{result.relative:+.3g} %", (("%", result.relative),)) if relative_shown(metric, result) else None
    units = Cell(f"{result.units} {result.unit_name}", (("units", result.units), ("pairs", result.pairs)))
    frames = sum(v for k, v in frames_by_unit(reference, part).items() if k in paired)
    head = [Cell(name), label, Cell(f"{result.difference:+.4g} {interval}", numbers)]
    tail = [Cell(str(result.seeds), (("seeds", result.seeds),)), Cell(str(frames), (("frames", frames),))]
    return [*head, relative or Cell("—"), Cell(result.verdict), units, *tail]  # —: the absolute difference only


def per_seed_table(runs: Runs, columns: list[str]) -> Table:
    """One row per (experiment, seed), one column per metric, the best run per column marked."""
    keyed = [(name, seed, m) for name, seeds in runs.items() for seed, m in sorted(seeds.items())]
    rows = [[Cell(name), Cell(str(seed)), *(number(m.get(c, math.nan)) for c in columns)] for name, seed, m in keyed]
    kinds = [""] * len(rows)
    for c, metric in enumerate(columns, start=2):
        mark_best(rows, kinds, [(r, c) for r in range(len(rows))], lower_is_better(metric))
    labels = ["experiment", "seed", *map(metric_label, columns)]
    return freeze("per_seed", "Per seed", ["experiment", "seed", *columns], labels, rows, kinds, 2, PER_SEED_NOTE)


def per_video_tables(per_video: PerVideo, columns: list[str]) -> tuple[Table, ...]:
    """One table per per-video metric (``l1``, ``akd_driving``, ...; every mode of it in the one table)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for metric in columns:
        if (place := locate(metric)) is not None:
            groups.setdefault((place[0], place[2]), []).append(metric)
    return tuple(per_video_table(per_video, part, column, metrics[0]) for (part, column), metrics in groups.items())


def per_video_table(per_video: PerVideo, part: str, column: str, metric: str) -> Table:
    """Rows (part, video or pair, mode); columns: frames, each experiment (mean over seeds), the no-motion baseline
    (its distinct values joined by ``/`` where experiments scored different frames)."""
    names = list(per_video)
    values = {n: seed_values(per_video[n], part, column) for n in names}
    baselines = [seed_values(per_video[n], part, f"baseline_{column}") for n in names]
    frames = [frames_by_unit(per_video[n], part) for n in names]
    rows = []
    for unit, mode in sorted({k for v in values.values() for k in v}):
        count = max(f.get(unit, 0) for f in frames)
        stats = [summarize(values[n].get((unit, mode), [])) for n in names]
        base = " / ".join(sorted({fmt(v) for b in baselines for v in b.get((unit, mode), [])}))
        means = [Cell(fmt(s.mean), (("mean", s.mean), ("sd", s.sd), ("n", s.n))) for s in stats]
        rows.append([Cell(part), Cell(unit), Cell(mode), Cell(str(count), (("frames", count),)), *means, Cell(base)])
        mark_best(rows, [""] * len(rows), [(len(rows) - 1, 4 + i) for i in range(len(names))], lower_is_better(metric))
    unit_label = "video" if part == "reconstruction" else "pair"
    title = f"Per {unit_label}: {column} {ARROWS[lower_is_better(metric)]}"
    cols, labels = ["part", "video", "mode", "frames", *names, "baseline"], ["part", unit_label, "mode", "frames"]
    labels += [*names, BASELINE_ROW]
    return freeze(f"per_video/{part}/{column}", title, cols, labels, rows, [""] * len(rows), 3, PER_VIDEO_NOTE)


def seed_values(rows_by_seed: Rows, part: str, column: str) -> dict[tuple[str, str], list[float]]:
    """``{(unit, mode): [value of each seed]}`` of one CSV column in the rows of ``part`` (finite values)."""
    out: dict[tuple[str, str], list[float]] = {}
    for (unit, mode, _seed), value in sorted(column_values(rows_by_seed, part, column).items()):
        out.setdefault((unit, mode), []).append(value)
    return out


def to_markdown(table: Table) -> str:
    """``### title``, the grid (best cells **bold**, ``|`` in names escaped) and the note."""

    def line(cells: Iterable[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rows = [line(f"**{c.text}**" if c.best and c.text else c.text for c in row) for row in table.rows]
    grid = "\n".join([line(table.labels), "|" + "---|" * len(table.labels), *rows])
    return f"### {table.title}\n\n{grid}\n" + (f"\n{table.note}\n" if table.note else "")


def to_html(table: Table) -> str:
    """A ``<table class="cpabanim-table">`` fragment: ``<caption>`` title, baseline rows ``<tr class="baseline">``,
    best cells ``<td class="best"><strong>``, the note in ``<tfoot>`` (``td.note``); all text escaped."""
    esc = html.escape

    def cell(c: Cell) -> str:
        return f'<td class="best"><strong>{esc(c.text)}</strong></td>' if c.best else f"<td>{esc(c.text)}</td>"

    head = "".join(f"<th>{esc(label)}</th>" for label in table.labels)
    rows = ((f'<tr class="{esc(kind)}">' if kind else "<tr>", row) for row, kind in zip(table.rows, table.kinds))
    body = "".join(tr + "".join(map(cell, row)) + "</tr>" for tr, row in rows)
    foot = f'<tfoot><tr><td class="note" colspan="{len(table.labels)}">{esc(table.note)}</td></tr></tfoot>'
    opening = f'<table class="cpabanim-table" data-table="{esc(table.name)}"><caption>{esc(table.title)}</caption>'
    return f"{opening}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot if table.note else ''}</table>"


def csv_records(table: Table) -> list[dict[str, object]]:
    """Tidy rows: ``table``, the row's key columns, ``column``, ``quantity`` (``mean``, ``sd``, ``n``,
    ``difference``, ``low``, ``high``...; ``text`` for a cell without numbers), ``value``, ``best`` (0/1)."""
    out = []
    for row, kind in zip(table.rows, table.kinds):
        keys = {
            "table": table.name,
            **{k: c.name or c.text for k, c in zip(table.columns, row[: table.keys])},
            "kind": kind,
        }
        for column, c in zip(table.columns[table.keys :], row[table.keys :]):
            for quantity, value in c.numbers or (("text", c.text),):
                out.append({**keys, "column": column, "quantity": quantity, "value": value, "best": int(c.best)})
    return out


def write_csv(tables: Sequence[Table], path: Path) -> None:
    """Every table's :func:`csv_records` in one tidy CSV (a column a table has no use for is left empty)."""
    records = [r for table in tables for r in csv_records(table)]
    last = ["column", "quantity", "value", "best"]
    fields = [k for k in dict.fromkeys(k for r in records for k in r) if k not in last] + last
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(records)
