"""The training loss curves of every experiment and seed: read from MLflow, drawn one panel per loss component.

Contract: :func:`train_histories` reads, for each (experiment, seed), every ``loss/<component>`` metric of the
newest FINISHED train run that logged losses (nothing with tracking off); :func:`plot_loss_curves` draws them
(matplotlib, Agg) and writes them as a long CSV, one row per logged point (:data:`CSV_COLUMNS`).

In each panel (``total`` first, then the components by name) every experiment has its colour: its seeds' raw
values faint behind, and over them the mean over seeds of each seed's smoothed curve with a band from the lowest
to the highest seed (min-max: with 2 or 3 seeds a standard deviation says little). The smoothing is a centred
rolling mean over ``2 h + 1`` logged points, ``h = n // 40`` (``n`` points: no smoothing under 40 points, 501
points at 10 000): centred, it does not lag a trend as an EMA does; at both ends it averages the points there are
(as pandas' ``rolling(center=True, min_periods=1)``), so the last value shown is smoothed too. The CSV's
``smoothed`` is that per-seed curve; ``dvc plots`` reads the file as one row per point (``x: step``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim.tracking import provenance, runs, store

Histories = dict[str, dict[int, dict[str, dict[int, float]]]]  # experiment -> seed -> component -> step -> value
CSV_COLUMNS = ("experiment", "seed", "component", "step", "value", "smoothed")
LOSS_PREFIX = "loss/"
TOTAL = "total"
SMOOTHING_DIVISOR = 40  # h = n // 40 logged points each side (module docstring)
LEGEND = (
    "training losses (lower is better)",
    "line: mean over seeds of each seed's centred rolling mean",
    "band: min-max over seeds; faint: raw values",
)
SEARCHED_RUNS = 5  # the newest finished runs looked at for one that logged losses


def train_histories(tracking: Mapping[str, Any], experiments: Mapping[str, Iterable[int]]) -> Histories:
    """experiment -> seed -> loss component -> step -> value, for every seed of ``experiments`` (experiment ->
    seeds) whose newest FINISHED train run (tags ``cpabanim.stage=train``, ``cpabanim.experiment``,
    ``cpabanim.seed``) logged ``loss/*`` metrics; pairs without such a run are left out, and everything is with
    tracking off. ``tracking``: the tracking section of the params (``enabled``, ``uri``, ``experiment``)."""
    settings = {"tracking": tracking}  # the store reads its settings from params' tracking section
    if not store.enabled(settings):
        return {}
    experiment_id = store.configure(settings)
    client = runs.mlflow_client()
    found: Histories = {}
    for experiment, seeds in experiments.items():
        for seed in seeds:
            history = run_losses(client, experiment_id, experiment, int(seed))
            if history:
                found.setdefault(experiment, {})[int(seed)] = history
    return found


def run_losses(client: Any, experiment_id: str, experiment: str, seed: int) -> dict[str, dict[int, float]]:
    """component -> step -> value of the newest finished train run of (``experiment``, ``seed``) with losses."""
    candidates = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{provenance.TAG_STAGE}` = 'train' and tags.`{provenance.TAG_EXPERIMENT}` = '{experiment}'"
            f" and tags.`{provenance.TAG_SEED}` = '{seed}' and tags.`{provenance.TAG_ROLE}` = 'stage'"
            " and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=SEARCHED_RUNS,
    )
    run = next((r for r in candidates if any(k.startswith(LOSS_PREFIX) for k in r.data.metrics)), None)
    if run is None:
        return {}
    keys = [k for k in run.data.metrics if k.startswith(LOSS_PREFIX)]
    return {
        key[len(LOSS_PREFIX) :]: {p.step: p.value for p in client.get_metric_history(run.info.run_id, key)}
        for key in keys
    }


def smooth(values: np.ndarray) -> np.ndarray:
    """The centred rolling mean of the module docstring: point ``i`` is the mean of the points ``i - h .. i + h``
    that exist (float64, same length; a copy when ``h`` is 0)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    half = n // SMOOTHING_DIVISOR
    if half == 0:
        return values.copy()
    index = np.arange(n)
    low, high = np.maximum(index - half, 0), np.minimum(index + half + 1, n)
    sums = np.concatenate([[0.0], np.cumsum(values)])
    return (sums[high] - sums[low]) / (high - low)


def components_of(histories: Histories) -> list[str]:
    """Every loss component of ``histories``: ``total`` first, then the others by name."""
    names = {c for seeds in histories.values() for losses in seeds.values() for c, points in losses.items() if points}
    return sorted(names, key=lambda c: (c != TOTAL, c))


def series(points: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) in step order, non-finite values left out."""
    steps = np.array(sorted(points), dtype=np.int64)
    values = np.array([points[s] for s in steps], dtype=np.float64)
    keep = np.isfinite(values)
    return steps[keep], values[keep]


def seed_band(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, low, high) over seeds of smoothed curves (steps, values): on the union of their steps, each
    curve interpolated inside its own range of steps only (a seed that stopped early counts until it stopped)."""
    grid = np.unique(np.concatenate([steps for steps, _ in curves]))
    stacked = np.full((len(curves), len(grid)), np.nan)
    for row, (steps, values) in enumerate(curves):
        covered = (grid >= steps[0]) & (grid <= steps[-1])
        stacked[row, covered] = np.interp(grid[covered], steps, values)
    return grid, np.nanmean(stacked, axis=0), np.nanmin(stacked, axis=0), np.nanmax(stacked, axis=0)


def write_csv(histories: Histories, components: list[str], path: Path) -> None:
    """The long CSV: one row per (experiment, seed, component, step), with the raw and the smoothed value."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for experiment, seeds in histories.items():
            for seed in sorted(seeds):
                for component in components:
                    steps, values = series(seeds[seed].get(component, {}))
                    smoothed = smooth(values)
                    writer.writerows(
                        [experiment, seed, component, int(s), f"{v:.6g}", f"{m:.6g}"]
                        for s, v, m in zip(steps, values, smoothed, strict=True)
                    )


def draw_panel(ax, histories: Histories, component: str, colours: list) -> None:
    """One component: per experiment its seeds' raw values faint, the mean of the smoothed seeds and its band."""
    positive = True
    for colour, (experiment, seeds) in zip(colours, histories.items(), strict=True):
        curves = []
        for seed in sorted(seeds):
            steps, values = series(seeds[seed].get(component, {}))
            if len(steps):
                ax.plot(steps, values, color=colour, alpha=0.15, linewidth=0.5)
                curves.append((steps, smooth(values)))
                positive &= bool((values > 0).all())
        if not curves:
            continue
        grid, mean, low, high = seed_band(curves)
        marker = "o" if len(grid) < 20 else None
        ax.plot(
            grid,
            mean,
            color=colour,
            linewidth=1.6,
            marker=marker,
            markersize=3,
            label=f"{experiment} ({len(curves)} seed{'s' if len(curves) > 1 else ''})",
        )
        if len(curves) > 1:
            ax.fill_between(grid, low, high, color=colour, alpha=0.3, linewidth=0)
    lows, highs = ax.dataLim.y0, ax.dataLim.y1
    if positive and ax.lines and lows > 0 and highs / lows > 30:  # losses spanning decades: a log axis
        ax.set_yscale("log")
    ax.set_title(f"{LOSS_PREFIX}{component}{' (log scale)' if ax.get_yscale() == 'log' else ''}", fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(color="0.92")
    if ax.lines:
        ax.legend(fontsize=7)


def plot_loss_curves(histories: Histories, png: Path, csv_path: Path) -> None:
    """Write ``png`` (one panel per loss component, :func:`components_of` order, titled ``loss/<component>``, the
    titles also in the PNG's ``Description`` metadata; experiments in distinct colours; the module docstring says
    what is drawn) and ``csv_path`` (:data:`CSV_COLUMNS`, one row per logged point). Without any curve: one panel
    saying so, and a CSV of the header only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    components = components_of(histories)
    write_csv(histories, components, csv_path)
    cols = min(3, max(len(components), 1))
    rows = max(1, math.ceil(len(components) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows + 0.5), dpi=100, squeeze=False)
    colours = list(plt.cm.tab10(np.arange(len(histories)) % 10))
    for ax, component in zip(axes.flat, components, strict=False):
        draw_panel(ax, histories, component, colours)
    for ax in list(axes.flat)[len(components) :]:
        ax.axis("off")
    if not components:
        axes[0][0].text(
            0.5,
            0.5,
            "no training curves (tracking off, or no finished train run logged losses)",
            ha="center",
            va="center",
            transform=axes[0][0].transAxes,
            fontsize=8,
        )
    fig.suptitle(("; " if cols == 3 else "\n").join(LEGEND), fontsize=8)  # one line where there is room
    fig.tight_layout()
    titles = " | ".join(ax.get_title() for ax in axes.flat if ax.get_title())
    fig.savefig(png, metadata={"Title": "training losses", "Description": titles})  # the panels, for the tests
    plt.close(fig)
