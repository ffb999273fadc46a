"""The comparison of experiments over their seeds: tables with uncertainty, figures, a videos page, an HTML page.

Library of the ``report`` stage (:mod:`cpabanim.pipeline.report`): :func:`report_experiments` reads each run's
(experiment, seed) metrics, per-video rows, recorded parameters (:mod:`~cpabanim.reporting.recorded`) and training
curves and writes every output; the parts live beside it: the parameter table (:mod:`~cpabanim.reporting.tables`),
the tables over seeds with the paired comparison (:mod:`~cpabanim.reporting.comparison`,
:mod:`~cpabanim.reporting.stats`), the figures (:mod:`~cpabanim.reporting.figures`,
:mod:`~cpabanim.reporting.curves`), the synchronised videos (:mod:`~cpabanim.reporting.videos`), the HTML page
(:mod:`~cpabanim.reporting.page`, its first screen :mod:`~cpabanim.reporting.headline`) and what the MLflow runs
receive (:mod:`~cpabanim.reporting.parents`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cpabanim.errors import CpabanimError
from cpabanim.reporting.comparison import ComparisonTables, to_markdown, write_csv
from cpabanim.reporting.curves import plot_loss_curves, train_histories
from cpabanim.reporting.figures import plot_metrics, write_samples
from cpabanim.reporting.motion import bin_tables, motion_tables
from cpabanim.reporting.page import write_html
from cpabanim.reporting.parents import log_experiment, log_seed_run
from cpabanim.reporting.recorded import Recorded, recorded_params
from cpabanim.reporting.stats import summarize
from cpabanim.reporting.tables import write_tables
from cpabanim.reporting.videos import write_videos_page

log = logging.getLogger(__name__)

RunPaths = dict[str, dict[int, dict[str, Path]]]  # experiment -> seed -> input name -> path


def report_experiments(
    *,
    experiments: RunPaths,
    stages: Sequence[str],
    outputs: dict[str, Path],
    tracking: Mapping[str, Any],
    log_checkpoints: bool,
    reference: str | None,
    parent_of: Callable[[str, dict[str, str]], str | None],
    seed_run_of: Callable[[str | None, str, int], str | None],
) -> None:
    """Write every output of the report stage for ``experiments`` (experiment -> seed -> its input paths:
    ``metrics``, ``per_video``, ``reconstruction``, ``animation``, ``checkpoints``, ``avd_checkpoints``,
    ``processed``) and log each run's results to MLflow.

    ``stages``: the per-experiment stages whose recorded params the parameter table compares; ``outputs``: the
    report's files; ``tracking``: the tracking section of the params (training curves, recorded runs);
    ``log_checkpoints``: also log and register each trained model (the avd stage's); ``reference``: the experiment
    the others are compared with (None: the first); ``parent_of(name, recorded values)``: the experiment's parent
    run id (None: not tracked); ``seed_run_of(parent, name, seed)``: the seed's run below it.
    """
    names = list(experiments)
    metrics = {e: {s: read_metrics(p["metrics"])[0] for s, p in seeds.items()} for e, seeds in experiments.items()}
    rows = {e: {s: read_rows(p["per_video"]) for s, p in seeds.items()} for e, seeds in experiments.items()}
    records = {e: experiment_record(e, seeds, stages, tracking) for e, seeds in experiments.items()}
    shown = {e: seeds[min(seeds)] for e, seeds in experiments.items()}  # the lowest seed's pictures and videos
    tables = motion_tables(metrics, rows, reference or names[0])
    recorded = {e: r for e, (r, _) in records.items()}
    table = write_outputs(experiments, shown, metrics, recorded, tables, outputs, tracking)
    for name in names:
        record, by_seed = records[name]
        parent = parent_of(name, record.values)
        for seed, paths in experiments[name].items():
            run_id = seed_run_of(parent, name, seed)
            log_seed_run(run_id, name, seed, metrics[name][seed], paths, log_checkpoints, by_seed[seed])
        log_experiment(parent, name, aggregate(metrics[name]), shown[name], outputs)
    print("\n\n".join([table, *(to_markdown(t) for t in tables.all()[:2])]))
    log.info(
        "report: %s (videos: %s); the runs side by side in the MLflow UI: `cpabanim ui`",
        outputs["html"],
        outputs["videos_html"],
    )


def write_outputs(
    experiments: RunPaths,
    shown: Mapping[str, Mapping[str, Path]],
    metrics: Mapping[str, Mapping[int, dict[str, float]]],
    records: dict[str, Recorded],
    tables: ComparisonTables,
    outputs: dict[str, Path],
    tracking: Mapping[str, Any],
) -> str:
    """Every file of the report (``outputs``) from the runs' ``metrics`` (experiment -> seed -> metrics.json),
    the experiments' recorded parameters and the tables over seeds; ``shown``: each experiment's paths of the seed
    its sample pictures show. Returns the parameter table (markdown)."""
    names = list(experiments)
    means = {e: aggregate(by_seed, only_means=True) for e, by_seed in metrics.items()}
    outputs["table_md"].parent.mkdir(parents=True, exist_ok=True)
    table = write_tables(names, records, means, outputs["table_md"], outputs["table_csv"])
    with open(outputs["table_md"], "a") as handle:
        handle.write("\n" + "\n\n".join(to_markdown(t) for t in tables.all()) + "\n")
    write_csv([*tables.all(), *bin_tables(tables)], outputs["tables_csv"])
    plot_metrics(means, outputs["metrics_png"])
    histories = train_histories(tracking, {e: list(seeds) for e, seeds in experiments.items()})
    plot_loss_curves(histories, outputs["loss_png"], outputs["loss_csv"])
    write_samples(dict(shown), outputs["samples_png"])
    media = {
        e: {s: {k: p[k] for k in ("reconstruction", "animation")} for s, p in seeds.items()}
        for e, seeds in experiments.items()
    }
    write_videos_page(media, outputs["videos_html"], processed=next(iter(shown.values()))["processed"])
    write_html(table, tables, outputs, outputs["html"])
    return table


def experiment_record(
    name: str, seeds: Mapping[int, Mapping[str, Path]], stages: Sequence[str], tracking: Mapping[str, Any]
) -> tuple[Recorded, dict[int, Recorded]]:
    """The experiment's recorded parameters (its lowest seed's; the seeds' differ only in the seed, which the
    records leave out: a warning says when they do not) and each seed's own."""
    by_seed = {s: recorded_params(name, s, paths, stages, tracking) for s, paths in seeds.items()}
    first = by_seed[min(by_seed)]
    for seed, record in by_seed.items():
        differing = sorted(k for k in first.values.keys() & record.values.keys() if first.values[k] != record.values[k])
        if differing:
            log.warning("%s: seed %d recorded other values than seed %d for %s", name, seed, min(by_seed), differing)
    return first, by_seed


def aggregate(by_seed: Mapping[int, Mapping[str, float]], only_means: bool = False) -> dict[str, float]:
    """Each metric's mean over the seeds (under its own name) and, unless ``only_means``, ``<metric>/sd`` (when
    there are 2 seeds or more) and ``<metric>/n``: what an experiment's MLflow parent holds."""
    out: dict[str, float] = {}
    for key in sorted({k for values in by_seed.values() for k in values}):
        summary = summarize(values[key] for values in by_seed.values() if key in values)
        out[key] = summary.mean
        if not only_means:
            out[f"{key}/n"] = float(summary.n)
            if math.isfinite(summary.sd):
                out[f"{key}/sd"] = summary.sd
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a run's per-video CSV (``cpabanim evaluate``)."""
    if not path.is_file():
        raise CpabanimError(f"{path} not found: run `cpabanim evaluate` first")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_metrics(path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Numbers of metrics.json (finite ones) and the other entries (e.g. why a metric is unavailable)."""
    if not path.is_file():
        raise CpabanimError(f"{path} not found: run `cpabanim evaluate` first")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CpabanimError(f"{path} is not valid JSON: {err}") from None
    metrics: dict[str, float] = {}
    notes: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            notes[key] = str(value)
        else:
            metrics[key] = float(value)
    return metrics, notes
