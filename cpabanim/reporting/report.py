"""The comparison of experiments: a table, one plot per metric, loss curves, a labelled sample grid, an HTML page.

Library of the ``report`` stage (:mod:`cpabanim.pipeline.report`): :func:`report_experiments` reads each
experiment's metrics, recorded parameters (:mod:`~cpabanim.reporting.recorded`) and training curve and writes every
output; the parts live beside it: the table (:mod:`~cpabanim.reporting.tables`), the figures
(:mod:`~cpabanim.reporting.figures`), the HTML page (:mod:`~cpabanim.reporting.page`) and what each experiment's
MLflow parent run receives (:mod:`~cpabanim.reporting.parents`: metrics, media, the registered model).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cpabanim.errors import CpabanimError
from cpabanim.reporting.figures import plot_losses, plot_metrics, write_samples
from cpabanim.reporting.page import write_html
from cpabanim.reporting.parents import log_experiment
from cpabanim.reporting.recorded import recorded_params
from cpabanim.reporting.tables import write_tables
from cpabanim.tracking import provenance, runs, store

log = logging.getLogger(__name__)


def report_experiments(
    *,
    experiments: dict[str, dict[str, Path]],
    stages: Sequence[str],
    outputs: dict[str, Path],
    tracking: Mapping[str, Any],
    log_checkpoints: bool,
    parent_of: Callable[[str, dict[str, str]], str | None],
) -> None:
    """Write every output of the report stage for ``experiments`` (name -> its input paths: ``metrics``,
    ``per_video``, ``reconstruction``, ``animation``, ``checkpoints``, ``processed``) and log each one's results
    to its MLflow parent run.

    ``stages``: the per-experiment stages whose recorded params the table compares
    (:mod:`~cpabanim.reporting.recorded`); ``outputs``: the report's files; ``tracking``: the tracking section of
    the params (training curves, recorded runs); ``log_checkpoints``: also log and register each trained model;
    ``parent_of(name, recorded values)``: the parent run id (None: not tracked).
    """
    names = list(experiments)
    metrics = {name: read_metrics(experiments[name]["metrics"])[0] for name in names}
    records = {name: recorded_params(name, experiments[name]["checkpoints"], stages, tracking) for name in names}
    histories = {name: train_history(tracking, name) for name in names}
    outputs["table_md"].parent.mkdir(parents=True, exist_ok=True)
    table = write_tables(names, records, metrics, outputs["table_md"], outputs["table_csv"])
    plot_metrics(metrics, outputs["metrics_png"])
    plot_losses(histories, outputs["loss_png"], outputs["loss_csv"])
    write_samples(experiments, outputs["samples_png"])
    write_html(table, outputs, outputs["html"])
    for name in names:
        parent = parent_of(name, records[name].values)
        log_experiment(parent, name, metrics[name], experiments[name], outputs, log_checkpoints, records[name])
    print(table)
    log.info("report: %s; the runs side by side in the MLflow UI: `cpabanim ui`", outputs["html"])


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


def train_history(tracking: Mapping[str, Any], experiment: str) -> dict[int, float]:
    """``step -> loss/total`` of the newest train run of ``experiment`` that logged losses (empty without MLflow).
    ``tracking``: the tracking section of the params (``enabled``, ``uri``, ``experiment``)."""
    settings = {"tracking": tracking}  # the store reads its settings from params' tracking section
    if not store.enabled(settings):
        return {}
    client = runs.mlflow_client()
    found = client.search_runs(
        [store.configure(settings)],
        filter_string=(
            f"tags.`{provenance.TAG_STAGE}` = 'train' and tags.`{provenance.TAG_EXPERIMENT}` = '{experiment}'"
            " and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    run = next((r for r in found if "loss/total" in r.data.metrics), None)
    if run is None:
        return {}
    return {p.step: p.value for p in client.get_metric_history(run.info.run_id, "loss/total")}
