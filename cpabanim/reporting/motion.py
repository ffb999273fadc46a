"""Results by motion size (docs/evaluation.md, "Results by motion size"): the report's tables on the frames of each
motion-size bin alone, and the plot of the headline metrics against the bins.

Contract: ``runs`` and ``per_video`` as :func:`cpabanim.reporting.comparison.comparison_tables` takes them, where
each run's metrics.json holds ``motion_bin/<bin>/<key>`` (:func:`cpabanim.evaluation.motion_size.bin_key`) and its
per-video CSV the rows of each bin (column ``motion_bin``). A bin's tables are ``comparison_tables`` of that bin's
metrics under their pooled names and of its rows: the same means ± sd, paired differences, bootstrap intervals and
verdicts as for all frames, computed by the same code. The bins are the evaluation's (model-independent), so every
experiment's bin holds the same frames.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping
from dataclasses import replace

from cpabanim.evaluation.motion_size import BIN_LABELS, MOTION_SIZE, bin_key, bin_metrics
from cpabanim.reporting.comparison import ComparisonTables, PerVideo, Runs, Table, comparison_tables, to_html
from cpabanim.reporting.headline import summary_cell

BINS_NOTE = "bins: terciles of the test frames' motion sizes (docs/evaluation.md), the same for every run"


def rows_of_bin(per_video: PerVideo, label: str) -> dict[str, dict[int, list[dict[str, str]]]]:
    """Each run's per-video rows of bin ``label`` ("": those of all frames), as rows of all frames."""
    return {name: {seed: rows_in_bin(rows, label) for seed, rows in seeds.items()} for name, seeds in per_video.items()}


def rows_in_bin(rows: list[dict[str, str]], label: str) -> list[dict[str, str]]:
    return [{**row, "motion_bin": ""} for row in rows if row.get("motion_bin", "") == label]


def runs_of_bin(runs: Runs, label: str) -> dict[str, dict[int, dict[str, float]]]:
    """Each run's metrics of bin ``label`` under their pooled names."""
    return {name: {seed: bin_metrics(dict(m), label) for seed, m in seeds.items()} for name, seeds in runs.items()}


def bin_label(label: str, runs: Mapping[str, Mapping[int, Mapping[str, float]]]) -> str:
    """``large motion (0.11–0.17)``: the bin and the range of its frames' motion sizes (any run's: all agree)."""
    key = f"recon/{MOTION_SIZE}"
    found = next((m for seeds in runs.values() for m in seeds.values() if f"{key}_low" in m), None)
    span = f" ({found[f'{key}_low']:.3g}–{found[f'{key}_high']:.3g})" if found else ""
    return f"{label} motion{span}"


def motion_tables(runs: Runs, per_video: PerVideo, reference: str | None) -> ComparisonTables:
    """:func:`comparison_tables` of all frames, with ``by_motion``: the tables of each bin the runs have."""
    tables = comparison_tables(runs, rows_of_bin(per_video, ""), reference)
    by_motion = []
    for label in BIN_LABELS:
        bin_runs = runs_of_bin(runs, label)
        if any(m for seeds in bin_runs.values() for m in seeds.values()):
            bin_tables = comparison_tables(bin_runs, rows_of_bin(per_video, label), reference)
            by_motion.append((bin_label(label, bin_runs), renamed(bin_tables, label)))
    return replace(tables, by_motion=tuple(by_motion))


def renamed(tables: ComparisonTables, label: str) -> ComparisonTables:
    """A bin's tables, the summary and the comparison named ``motion_bin/<label>/...`` (the tidy CSV's ``table``)."""
    summary = replace(tables.summary, name=bin_key(label, tables.summary.name))
    summary = replace(summary, title=f"{summary.title}, {label} motion")
    if tables.comparison is None:
        return replace(tables, summary=summary)
    comparison = replace(tables.comparison, name=bin_key(label, tables.comparison.name))
    return replace(tables, summary=summary, comparison=replace(comparison, title=f"{comparison.title}, {label} motion"))


def bin_tables(tables: ComparisonTables) -> list[Table]:
    """The tables the report shows of every bin (summary, comparison), for the tidy CSV."""
    return [t for _, b in tables.by_motion for t in (b.summary, b.comparison) if t is not None]


def plot_by_motion(tables: ComparisonTables, metrics: list[str]) -> bytes | None:
    """A PNG: per metric of ``metrics``, its mean over seeds in each bin, one line per experiment with a band of
    ± sd over seeds (none with one seed); None without bins. Numbers: the bins' summary tables."""
    if not tables.by_motion or not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label for label, _ in tables.by_motion]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), dpi=110, squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for name in experiment_names(tables):
            means, sds = zip(*(mean_sd(t, name, metric) for _, t in tables.by_motion))
            line = ax.plot(range(len(labels)), means, marker="o", label=name)[0]
            low = [m - s if math.isfinite(s) else m for m, s in zip(means, sds)]
            high = [m + s if math.isfinite(s) else m for m, s in zip(means, sds)]
            ax.fill_between(range(len(labels)), low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xticks(range(len(labels)), [label.replace(" (", "\n(") for label in labels], fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(color="0.9")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("metric per motion-size bin: mean over seeds, band ± sd over seeds", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def experiment_names(tables: ComparisonTables) -> list[str]:
    summary = tables.summary
    return [row[0].text for row, kind in zip(summary.rows, summary.kinds) if kind != "baseline"]


def mean_sd(tables: ComparisonTables, name: str, metric: str) -> tuple[float, float]:
    """(mean, sd) over seeds of ``name`` on ``metric`` in a summary table; NaN where it has none."""
    numbers = dict(summary_cell(tables.summary, name, metric).numbers)
    return numbers.get("mean", math.nan), numbers.get("sd", math.nan)


def motion_section(tables: ComparisonTables, figure: str) -> str:
    """The folded section's content: the plot (an ``<img>``, "" without) and each bin's summary and comparison."""
    parts = [figure, f"<p>{html.escape(BINS_NOTE)}</p>"]
    for label, bin_tables in tables.by_motion:
        parts.append(f"<h3>{html.escape(label)}</h3>{to_html(bin_tables.summary)}")
        parts.append(to_html(bin_tables.comparison) if bin_tables.comparison else "")
    return "".join(parts)
