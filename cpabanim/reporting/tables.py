"""The comparison table: one row per experiment (the recorded parameters that differ between them, where they were
recorded, then every metric), the no-motion baseline row(s), as markdown and CSV.

Contract: metric names are ``metrics.json``'s (``recon/l1``, ``anim/<mode>/<metric>``); baselines
(:mod:`cpabanim.evaluation.baselines`) are rows, never columns; every number is written with 4 significant digits.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from cpabanim.evaluation.baselines import BASELINE_PREFIX, baseline_key
from cpabanim.evaluation.motion_size import is_descriptor
from cpabanim.reporting.recorded import UNKNOWN, Recorded
from cpabanim.reporting.stats import PairedDifference

LOWER_IS_BETTER = ("l1", "akd", "mkr", "aed", "lpips", "fid")
# metrics that cannot be negative (errors, distances, rates; PSNR of [0, 1] frames): a % of them can mean something.
# Not SSIM (it can be), nor the transfer scores (below 0 = worse than the still source).
NON_NEGATIVE = ("l1", "psnr", "akd", "mkr", "aed", "lpips", "fid")
RECON_ORDER = ("l1", "psnr", "ssim", "lpips", "fid", "akd", "mkr", "aed")
# animation: motion transfer first (transfer_* relative to the still source, then akd/mkr), others, identity last
ANIM_RANK = {"transfer": 0, "akd": 1, "mkr": 1, "aed": 3, "l1": 4}
ARROWS = {True: "\u2193", False: "\u2191"}  # lower / higher is better
BASELINE_ROW = "baseline: no motion"
SOURCE_COLUMN = "params recorded by"  # where each row's parameter values come from (cpabanim.reporting.recorded)
TABLE_NOTE = (
    "\u2193 lower is better, \u2191 higher is better. *baseline: no motion* is scored on the same frames: "
    "reconstruction = the source frame copied as every prediction, animation = the source image unchanged "
    "(its `l1_first` and `aed_source` are 0 by construction, its `transfer_*` 0 by definition: they measure the "
    "motion transferred beyond it). See docs/evaluation.md. The parameters are what "
    "each experiment's runs recorded (*params recorded by*: the checkpoint `last.pt` or the stage's MLflow run); "
    "`unknown`: no record. See docs/pipeline.md."
)


def metric_columns(metrics: dict[str, dict[str, float]]) -> list[str]:
    """The model metrics of every experiment, reconstruction first (baselines are rows, not columns; the metrics
    of each motion-size bin and the motion sizes are the report's per-bin tables)."""
    names = {m for values in metrics.values() for m in values if not m.startswith(BASELINE_PREFIX)}
    names = {m for m in names if not is_descriptor(m)}
    return sorted(names, key=metric_rank)


def metric_rank(metric: str) -> tuple[int, int, str, str]:
    """Sort key: reconstruction in :data:`RECON_ORDER`, then animation by :data:`ANIM_RANK`, mode, name."""
    parts = metric.split("/")
    head = parts[-1].split("_")[0]
    if parts[0] == "recon":
        return 0, RECON_ORDER.index(head) if head in RECON_ORDER else len(RECON_ORDER), "", metric
    return 1, ANIM_RANK.get(head, 2), parts[1] if len(parts) > 2 else "", metric


def lower_is_better(metric: str) -> bool:
    """``recon/l1`` and ``anim/relative/akd_driving`` are lower-is-better; PSNR and SSIM higher-is-better."""
    return metric.split("/")[-1].split("_")[0] in LOWER_IS_BETTER


def relative_shown(metric: str, result: PairedDifference) -> bool:
    """Whether the relative difference of a comparison means something: the metric cannot be negative
    (:data:`NON_NEGATIVE`) and the reference's mean is clearly away from 0 (``result.reference_clear_of_zero``).
    Otherwise a % magnifies noise near 0 or turns its sign with a negative reference; the absolute difference says
    it all."""
    head = metric.split("/")[-1].split("_")[0]
    return head in NON_NEGATIVE and result.reference_clear_of_zero and math.isfinite(result.relative)


def baseline_rows(
    names: list[str], metrics: dict[str, dict[str, float]], columns: list[str]
) -> list[tuple[str, dict[str, float]]]:
    """The no-motion baseline under each metric column: one row when every experiment scored it on the same
    frames (same values), else one row per experiment (e.g. a different ``reconstruct.max_frames``)."""
    values = {
        name: {m: metrics[name][key] for m in columns if (key := baseline_key(m)) is not None and key in metrics[name]}
        for name in names
    }
    distinct = {json.dumps(v, sort_keys=True) for v in values.values() if v}
    if not distinct:
        return []
    if len(distinct) == 1:
        return [(BASELINE_ROW, next(v for v in values.values() if v))]
    return [(f"{BASELINE_ROW}, {name}", values[name]) for name in names if values[name]]


def parameter_columns(records: dict[str, Recorded]) -> list[str]:
    """The recorded parameters whose known values differ between the experiments (an ``unknown`` value is no
    difference: nothing says what it was)."""
    keys = sorted({k for record in records.values() for k in record.values})
    return [k for k in keys if len({r.values[k] for r in records.values() if k in r.values}) > 1]


def write_tables(
    names: list[str], records: dict[str, Recorded], metrics: dict[str, dict[str, float]], md_path: Path, csv_path: Path
) -> str:
    """One row per experiment (the recorded parameters that differ between them, where each row's values come
    from, then every metric) and the baseline row(s); returns the markdown table."""
    varying = parameter_columns({n: records[n] for n in names})
    metric_names = metric_columns(metrics)
    columns = ["experiment", *varying, SOURCE_COLUMN, *metric_names]
    rows = []
    for name in names:
        row = {"experiment": name, **{k: records[name].values.get(k, UNKNOWN) for k in varying}}
        row[SOURCE_COLUMN] = records[name].describe()
        row.update({m: f"{metrics[name][m]:.4g}" for m in metric_names if m in metrics[name]})
        rows.append(row)
    for label, values in baseline_rows(names, metrics, metric_names):
        rows.append({"experiment": label, **{m: f"{v:.4g}" for m, v in values.items()}})
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    header = [
        c if c not in metric_names or c.endswith("/frames") else f"{c} {ARROWS[lower_is_better(c)]}" for c in columns
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.get(c, "") for c in columns) + " |" for row in rows]
    text = "\n".join(lines)
    md_path.write_text("# cpabanim: experiments side by side\n\n" + text + "\n\n" + TABLE_NOTE + "\n")
    return text
