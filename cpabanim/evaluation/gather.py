"""The gather of ``cpabanim evaluate``: ``metrics.json``, ``metrics_unavailable.json`` and ``metrics_per_video.csv``
from the shards' records (:mod:`cpabanim.evaluation.shards`), exactly as one pass over every video writes them.

The per-frame values of every video are concatenated in the order of the videos' names, those of every pair in
the order of ``pairs.json``, and only then pooled (never a mean of shard means); FID is computed here from every
video's features in the same order. So 1 shard and N shards give the same files, byte for byte. The gather
imports no torch (a small job: Python's start-up is most of it).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim.data import layout
from cpabanim.errors import DataError
from cpabanim.evaluation.baselines import BASELINE_PREFIX, COPY_SOURCE, SOURCE_UNCHANGED
from cpabanim.evaluation.pooling import (
    explain_missing,
    fid_of_features,
    pair_row,
    reconstruction_row,
    summarise,
    summarise_transfer,
    write_table,
)
from cpabanim.evaluation.records import ANIM, RECON, EvaluateJob, read_item

log = logging.getLogger(__name__)


def shard_records(job: EvaluateJob) -> list[dict[str, Any]]:
    """Every shard's record, each done for this run's params, all made by the same code and extractors and
    missing the same metrics; a :class:`DataError` naming the shard job to run otherwise."""
    first = files.read_json(job.folder(0) / layout.SHARD_MARKER, corrupt_ok=True)
    config = {**(first.get("config") or {}), "params": job.params()}
    records = [layout.read_record(job.folder(k), k, job.count, config, job.command) for k in range(job.count)]
    for k, record in enumerate(records):
        if record["reasons"] != records[0]["reasons"]:
            raise DataError(
                f"{job.folder(k)}: shard {k} ran with other extractors or networks available than shard 0 (their "
                f"reasons differ: {record['reasons']} vs {records[0]['reasons']}): run both where the same are"
            )
    return records


def load(job: EvaluateJob, part: str, name: str, shard_key: str) -> dict[str, Any]:
    """The record of item ``name`` (of ``part``: recon, anim), in the shard of ``shard_key``'s name."""
    folder = job.folder(layout.shard_of(shard_key, job.count))
    item = read_item(files.contained_path(folder, part, f"{name}.npz"))
    if item is None:
        raise DataError(f"{folder}: the record of {name!r} is missing or unreadable: run `cpabanim {job.command}`")
    return item


def pooled(parts: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate(values) for name, values in parts.items()}


def gather_reconstruction(job: EvaluateJob, records: list[dict[str, Any]], rows: list[dict[str, Any]]):
    """The reconstructions' per-frame values (model, copy-source baseline), pooled in the videos' order, and their
    FID features; one CSV row per video into ``rows``."""
    model, baseline, features = defaultdict(list), defaultdict(list), defaultdict(list)
    for video in sorted(name for record in records for name in record["videos"]):
        item = load(job, RECON, video, video)
        for name, values in item["groups"]["model"].items():
            model[name].append(values)
        for name, values in item["groups"]["baseline"].items():
            baseline[name].append(values)
        for name, values in item["features"].items():
            features[name].append(values)
        rows.append(reconstruction_row(video, item["frames"], item["groups"]["model"], item["groups"]["baseline"]))
    return pooled(model), pooled(baseline), features


def gather_animation(job: EvaluateJob, records: list[dict[str, Any]], rows: list[dict[str, Any]]):
    """Each mode's per-frame values and the source-unchanged baseline's, pooled in the order of pairs.json; one
    CSV row per pair and mode into ``rows``."""
    per_mode: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    unchanged: dict[str, list[np.ndarray]] = defaultdict(list)
    pairs = sorted((pair["number"], pair["name"], k) for k, record in enumerate(records) for pair in record["pairs"])
    for _, name, k in pairs:
        folder = job.folder(k)
        item = read_item(files.contained_path(folder, ANIM, f"{name}.npz"))
        if item is None:
            raise DataError(f"{folder}: the record of {name!r} is missing or unreadable: run `cpabanim {job.command}`")
        groups = item["groups"]
        for metric, values in groups["unchanged"].items():
            unchanged[metric].append(values)
        for mode in records[k]["modes"]:
            for metric, values in groups[mode].items():
                per_mode[mode][metric].append(values)
            rows.append(pair_row(name, mode, item["frames"], groups[mode], groups["unchanged"]))
    return {mode: pooled(values) for mode, values in per_mode.items()}, pooled(unchanged)


def gather_evaluation(job: EvaluateJob) -> dict[str, float]:
    """Write the run's metrics files from its shards' records; returns the metrics."""
    records = shard_records(job)
    layout.remove_other_shards(job.shards_root, job.count)
    rows: list[dict[str, Any]] = []
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    recon, copy_source, features = gather_reconstruction(job, records, rows)
    summarise(recon, "recon", values, reasons)
    summarise(copy_source, f"{BASELINE_PREFIX}{COPY_SOURCE}/recon", values, reasons)
    values["recon/frames"] = float(sum(row["frames"] for row in rows if row["part"] == "reconstruction"))
    if features.get("fid_real"):
        values["recon/fid"] = fid_of_features(features["fid_real"], features["fid_fake"])
    per_mode, unchanged = gather_animation(job, records, rows)
    for mode, mode_values in per_mode.items():
        summarise(mode_values, f"anim/{mode}", values, reasons)
    summarise(unchanged, f"{BASELINE_PREFIX}{SOURCE_UNCHANGED}/anim", values, reasons)
    summarise_transfer(per_mode, unchanged, values, reasons)
    explain_missing(values, reasons, dict(records[0]["reasons"]), list(job.settings["metrics"]))

    out = job.outputs
    out["metrics"].parent.mkdir(parents=True, exist_ok=True)
    out["metrics"].write_text(json.dumps(dict(sorted(values.items())), indent=2) + "\n")
    out["unavailable"].write_text(json.dumps(dict(sorted(reasons.items())), indent=2) + "\n")
    write_table(rows, out["per_video"])

    from cpabanim.tracking import log_artifact, log_metrics

    log_metrics(values)
    for path in out.values():
        log_artifact(path, "evaluation")
    counts = extraction_counts(records)
    log.info(
        "metrics (%d extractor results reused from the cache, %d computed; test frames extracted: %d): %s",
        sum(c["hits"] for c in counts.values()),
        sum(c["misses"] for c in counts.values()),
        counts["reference"]["frames"],
        ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())),
    )
    return values


def extraction_counts(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The shards' extraction counts, summed: per role, results read from the cache, computed, frames extracted."""
    return {
        role: {key: sum(r["extraction"][role][key] for r in records) for key in ("hits", "misses", "frames")}
        for role in ("reference", "generated")  # the extraction cache's roles
    }


def evaluate_all(job: EvaluateJob) -> dict[str, float]:
    """Every shard of ``job``, one after the other, then the gather: what ``cpabanim evaluate`` does without
    ``--shard`` or ``--gather``. Returns the metrics."""
    from cpabanim.evaluation.shards import evaluate_shard

    for shard in range(job.count):
        evaluate_shard(job, shard)
    return gather_evaluation(job)
