"""The table of a study run at several motion sizes (``workflow/studies/synthetic_motion.sh``; docs/model.md,
"Large-motion study (synthetic)"): one row per (motion size, experiment), the headline metrics as mean ± sd over
seeds and each experiment's paired difference from the reference with its verdict, all computed by the report's code
(:func:`cpabanim.reporting.comparison.comparison_tables`: :mod:`~cpabanim.reporting.stats`), one size at a time.

Contract: ``root/<size>/<experiment>/seed<k>/metrics.json`` and ``metrics_per_video.csv`` (what ``cpabanim
evaluate`` writes under a size's ``paths.outputs``) -> :func:`study_table` (a :class:`Table`), written by
:func:`write_study` as markdown (``table.md``, with ``cpabanim bench motion``'s figures when its JSON is given) and
as the report's tidy CSV (``table.csv``). Experiment folders are shown under :data:`SHOWN_AS` names (``default``,
which ``cpab`` is an alias of, as ``cpab``). Pooled over all test frames; the motion-size bins of each size are in
that size's own report (``root/<size>/report``).

    python -m cpabanim.reporting.study ROOT --sizes small,medium,large [--reference cpab] [--bench FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from cpabanim.errors import CpabanimError
from cpabanim.reporting.comparison import (
    Cell,
    ComparisonTables,
    Table,
    comparison_tables,
    freeze,
    metric_label,
    to_markdown,
)
from cpabanim.reporting.comparison import write_csv as write_tidy_csv
from cpabanim.reporting.headline import HEADLINE_METRICS, comparison_row, summary_cell
from cpabanim.reporting.motion import rows_of_bin
from cpabanim.reporting.report import read_metrics, read_rows

# ``cpab`` has exactly the embedded default's parameters: the pipeline trains it once, as ``default``
SHOWN_AS = {"default": "cpab"}
REFERENCE = "cpab"
# the report's headline metrics (those the runs have), with SSIM beside L1: the synthetic source has no face metrics
METRICS = (*HEADLINE_METRICS[:1], "recon/ssim", *HEADLINE_METRICS[1:])
NOTE = (
    "Each size: its own synthetic data (data.synthetic.motion), trainings and report. Value: mean ± sd over seeds "
    "(ddof=1). vs {reference}: candidate − reference over the (test video or animation pair, seed) pairs both have "
    "[95 % BCa bootstrap interval, whole videos resampled with their seeds], and the verdict: better / worse when "
    "the interval lies entirely on one side of 0 (cpabanim/reporting/stats.py). Baseline: no motion (the source "
    "copied), scored on the same frames. All test frames pooled; each size's report has its motion-size bins."
)


def read_runs(folder: Path) -> tuple[dict[str, dict[int, dict[str, float]]], dict[str, dict[int, list]]]:
    """The runs under one size's outputs ``folder``: (experiment -> seed -> metrics.json numbers, experiment -> seed
    -> per-video rows), experiments under their :data:`SHOWN_AS` names, in name order."""
    runs: dict[str, dict[int, dict[str, float]]] = {}
    rows: dict[str, dict[int, list]] = {}
    for path in sorted(folder.glob("*/seed*/metrics.json")):
        name, seed = SHOWN_AS.get(path.parent.parent.name, path.parent.parent.name), int(path.parent.name[4:])
        runs.setdefault(name, {})[seed] = read_metrics(path)[0]
        rows.setdefault(name, {})[seed] = read_rows(path.parent / "metrics_per_video.csv")
    if not runs:
        raise CpabanimError(f"no run in {folder} (<experiment>/seed<k>/metrics.json): run the study first")
    return runs, rows


def size_tables(folder: Path, reference: str) -> ComparisonTables:
    """The report's tables of one size's runs, on all test frames (the rows of the motion-size bins left out)."""
    runs, rows = read_runs(folder)
    return comparison_tables(runs, rows_of_bin(rows, ""), reference)


def study_table(root: Path, sizes: Sequence[str], reference: str = REFERENCE) -> Table:
    """Rows: (size, experiment) for each size's experiments, then its no-motion baseline; columns: seeds and, per
    metric of :data:`METRICS` the runs have, the mean ± sd, the difference from ``reference`` [interval] and the
    verdict."""
    tables = {size: size_tables(root / size, reference) for size in sizes}
    present = {m for t in tables.values() for m in t.summary.columns}
    metrics = [m for m in METRICS if m in present]
    rows, kinds = [], []
    for size, t in tables.items():
        summary = t.summary
        for cells, kind in zip(summary.rows, summary.kinds):
            name = cells[0].text
            row = [Cell(size), Cell(name), cells[1]]
            for metric in metrics:
                row.append(summary_cell(summary, name, metric))
                row += versus_cells(t, name, metric, kind)
            rows.append(row)
            kinds.append(kind)
    columns = ["motion", "experiment", "seeds"]
    labels = list(columns)
    for metric in metrics:
        columns += [metric, f"{metric}/vs_{reference}", f"{metric}/verdict"]
        labels += [metric_label(metric), f"vs {reference} [95 % CI]", "verdict"]
    title = f"Motion size × experiment, against {reference}"
    return freeze("study", title, columns, labels, rows, kinds, 2, NOTE.format(reference=reference))


def versus_cells(tables: ComparisonTables, name: str, metric: str, kind: str) -> list[Cell]:
    """The difference [interval] and verdict cells of ``name`` on ``metric``: ``reference`` for the reference,
    empty for a baseline row, why not where there is no comparison."""
    if kind == "baseline":
        return [Cell(""), Cell("")]
    if tables.comparison is None:
        return [Cell("n/a"), Cell(tables.reference_note)]
    if name == tables.reference:
        return [Cell("reference"), Cell("")]
    found = comparison_row(tables.comparison, name, metric)
    if found is None:
        return [Cell("n/a"), Cell("")]
    return [found["difference"], found["verdict"]]


def bench_markdown(results: dict) -> str:
    """``cpabanim bench motion``'s figures (its ``--json``) as one markdown table: per size, its true motion and
    each motion model's end-point error and L1 against the true warp."""
    lines = [
        "### Motion models alone, without training (`cpabanim bench motion`)",
        "",
        f"{results['videos']} test videos × {results['frames'] - 1} pairs (frame 0, frame t) per size, "
        f"{results['frame_size']} px, exact keypoints from the generator. EPE: end-point error against the true "
        "warp on the object, px (largest: the quarter of pairs that move most); L1: the warped source against the "
        "driving frame on the object; kp residual: how far the fitted transform leaves the keypoints, px.",
        "",
        "| motion | true motion px (largest) | model | EPE px | EPE largest px | L1 | kp residual px |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, figures in results["sizes"].items():
        motion = f"{figures['true_motion_px']:.3g} ({figures['true_motion_largest_px']:.3g})"
        for name, row in figures["rows"].items():
            residual = "" if row["keypoint_residual_px"] is None else f"{row['keypoint_residual_px']:.3g}"
            cells = [size, motion, name, f"{row['epe_px']:.3g}", f"{row['epe_largest_px']:.3g}", f"{row['l1']:.4g}"]
            lines.append("| " + " | ".join([*cells, residual]) + " |")
    return "\n".join(lines) + "\n"


def write_study(root: Path, sizes: Sequence[str], reference: str = REFERENCE, bench: Path | None = None) -> Table:
    """Write ``root/table.md`` (the study's table, then the benchmark's when ``bench`` names its JSON) and
    ``root/table.csv`` (tidy: one line per cell and number, as the report's tables.csv). -> the table."""
    table = study_table(root, sizes, reference)
    parts = [f"# Study: {', '.join(sizes)} motion\n", to_markdown(table)]
    if bench is not None and bench.is_file():
        parts.append(bench_markdown(json.loads(bench.read_text())))
    (root / "table.md").write_text("\n".join(parts))
    write_tidy_csv([table], root / "table.csv")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cpabanim.reporting.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the study's folder: one outputs folder per size below it")
    parser.add_argument("--sizes", default="small,medium,large", help="the sizes' folders, comma-separated, in order")
    parser.add_argument("--reference", default=REFERENCE, help=f"the experiment compared with (default {REFERENCE})")
    parser.add_argument("--bench", type=Path, default=None, help="cpabanim bench motion's --json, shown below")
    args = parser.parse_args(argv)
    try:
        write_study(args.root, [s for s in args.sizes.split(",") if s], args.reference, args.bench)
    except CpabanimError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    print((args.root / "table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
