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
import math
from collections import defaultdict
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim.data import layout
from cpabanim.errors import DataError
from cpabanim.evaluation.baselines import BASELINE_PREFIX, COPY_SOURCE, SOURCE_UNCHANGED
from cpabanim.evaluation.formulas import nanmean
from cpabanim.evaluation.motion_size import (
    BIN_LABELS,
    BIN_PREFIX,
    MOTION_SIZE,
    bin_edges,
    bin_key,
    bin_masks,
    in_bin,
)
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


def pooled(items: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each metric's per-frame values of ``items`` (one dict per video or pair, in order), concatenated."""
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for values in items:
        for name, v in values.items():
            parts[name].append(v)
    return {name: np.concatenate(values) for name, values in parts.items()}


def gather_reconstruction(job: EvaluateJob, records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The reconstructed videos' records, ``(video, item)`` in the order of the videos' names."""
    videos = sorted(name for record in records for name in record["videos"])
    return [(video, load(job, RECON, video, video)) for video in videos]


def gather_animation(job: EvaluateJob, records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The animated pairs' records, ``(pair, item)`` in the order of pairs.json."""
    pairs = sorted((pair["number"], pair["name"], k) for k, record in enumerate(records) for pair in record["pairs"])
    items = []
    for _, name, k in pairs:
        folder = job.folder(k)
        item = read_item(files.contained_path(folder, ANIM, f"{name}.npz"))
        if item is None:
            raise DataError(f"{folder}: the record of {name!r} is missing or unreadable: run `cpabanim {job.command}`")
        items.append((name, item))
    return items


Items = list[tuple[str, dict[str, Any]]]  # (video or pair, its record's groups and frame count), in order


def pooled_metrics(recon: Items, anim: Items, modes: list[str]) -> tuple[dict[str, float], dict[str, str]]:
    """Every metric but FID pooled over the frames of ``recon`` and ``anim`` (:func:`gather_evaluation`'s), with
    the reasons of those defined on no frame."""
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    summarise(pooled([item["groups"]["model"] for _, item in recon]), "recon", values, reasons)
    copy_source = pooled([item["groups"]["baseline"] for _, item in recon])
    summarise(copy_source, f"{BASELINE_PREFIX}{COPY_SOURCE}/recon", values, reasons)
    values["recon/frames"] = float(sum(item["frames"] for _, item in recon))
    per_mode = {mode: pooled([item["groups"][mode] for _, item in anim]) for mode in modes if anim}
    unchanged = pooled([item["groups"]["unchanged"] for _, item in anim])
    for mode, mode_values in per_mode.items():
        summarise(mode_values, f"anim/{mode}", values, reasons)
    summarise(unchanged, f"{BASELINE_PREFIX}{SOURCE_UNCHANGED}/anim", values, reasons)
    summarise_transfer(per_mode, unchanged, values, reasons)
    return values, reasons


def csv_rows(recon: Items, anim: Items, modes: list[str], motion_bin: str = "") -> list[dict[str, Any]]:
    """The per-video CSV rows of ``recon`` and ``anim``: one per video, then one per pair and mode; ``motion_bin``
    names the bin their frames are restricted to ("" for all frames)."""

    def with_motion(row: dict[str, Any], groups: dict[str, Any]) -> dict[str, Any]:
        sizes = groups.get(MOTION_SIZE, {}).get(MOTION_SIZE, np.full(1, np.nan))
        return {**row, "motion_bin": motion_bin, MOTION_SIZE: nanmean(sizes)}

    rows = []
    for video, item in recon:
        groups = item["groups"]
        rows.append(with_motion(reconstruction_row(video, item["frames"], groups["model"], groups["baseline"]), groups))
    for name, item in anim:
        groups = item["groups"]
        for mode in modes:
            rows.append(with_motion(pair_row(name, mode, item["frames"], groups[mode], groups["unchanged"]), groups))
    return rows


def restricted(items: Items, masks: dict[str, np.ndarray], label: str) -> Items:
    """``items`` with every per-frame array restricted to the frames of bin ``label`` (``masks``: per item name, its
    frames' bins), the frame count that of the bin; an item with no frame in the bin is left out."""
    out = []
    for name, item in items:
        mask = masks[name][label]
        if mask.any():
            groups = {group: in_bin(values, mask) for group, values in item["groups"].items()}
            out.append((name, {**item, "groups": groups, "frames": int(mask.sum())}))
    return out


def motion_bins(recon: Items, anim: Items, modes: list[str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Per motion-size bin (:mod:`cpabanim.evaluation.motion_size`; edges from the reconstructed test frames): every
    pooled metric on the bin's frames as ``motion_bin/<bin>/<key>`` with the bin's motion sizes (mean, low, high),
    and the bin's per-video CSV rows. Nothing when no frame has a motion size."""
    sizes = {name: item["groups"].get(MOTION_SIZE, {}).get(MOTION_SIZE) for name, item in [*recon, *anim]}
    if any(v is None for v in sizes.values()):
        return {}, []  # records of an evaluation without motion sizes
    edges = bin_edges(np.concatenate([sizes[name] for name, _ in recon])) if recon else None
    if edges is None:
        return {}, []
    masks = {name: bin_masks(v, edges) for name, v in sizes.items()}
    values: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    for label in BIN_LABELS:
        recon_bin, anim_bin = restricted(recon, masks, label), restricted(anim, masks, label)
        if not recon_bin and not anim_bin:
            continue
        metrics, _ = pooled_metrics(recon_bin, anim_bin, modes)  # undefined in a bin: absent (no reason recorded)
        frames = np.concatenate([item["groups"][MOTION_SIZE][MOTION_SIZE] for _, item in recon_bin] or [[np.nan]])
        metrics.update(motion_range(frames))
        values.update({bin_key(label, k): v for k, v in metrics.items() if math.isfinite(v)})
        rows += csv_rows(recon_bin, anim_bin, modes, label)
    return values, rows


def motion_range(sizes: np.ndarray) -> dict[str, float]:
    """``recon/motion_size`` (the mean) and its ``_low`` / ``_high`` of a bin's reconstructed frames (T,)."""
    key = f"recon/{MOTION_SIZE}"
    if not np.isfinite(sizes).any():
        return {}
    return {key: nanmean(sizes), f"{key}_low": float(np.nanmin(sizes)), f"{key}_high": float(np.nanmax(sizes))}


def gather_evaluation(job: EvaluateJob) -> dict[str, float]:
    """Write the run's metrics files from its shards' records; returns the metrics."""
    records = shard_records(job)
    layout.remove_other_shards(job.shards_root, job.count)
    recon, anim = gather_reconstruction(job, records), gather_animation(job, records)
    modes = list(records[0]["modes"]) if anim else []
    values, reasons = pooled_metrics(recon, anim, modes)
    features = pooled_features(recon)
    if features:
        values["recon/fid"] = fid_of_features(features["fid_real"], features["fid_fake"])
    explain_missing(values, reasons, dict(records[0]["reasons"]), list(job.settings["metrics"]))
    by_motion, bin_rows = motion_bins(recon, anim, modes)
    values.update(by_motion)
    rows = csv_rows(recon, anim, modes) + bin_rows

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
        "metrics (%d extractor results reused from the cache, %d computed; test frames extracted: %d; motion size: "
        "%s): %s",
        sum(c["hits"] for c in counts.values()),
        sum(c["misses"] for c in counts.values()),
        counts["reference"]["frames"],
        records[0].get("motion", "none"),
        ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()) if not k.startswith(BIN_PREFIX)),
    )
    return values


def pooled_features(recon: Items) -> dict[str, list[np.ndarray]]:
    """Every video's FID features (``fid_real``, ``fid_fake``: lists of (frames, D)), in order; {} without FID."""
    features: dict[str, list[np.ndarray]] = defaultdict(list)
    for _, item in recon:
        for name, values in item["features"].items():
            features[name].append(values)
    return dict(features) if features.get("fid_real") else {}


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
