"""The gather of ``cpabanim reconstruct``: the run's ``reconstruction/`` folder, laid out from its shards' folders
(:func:`cpabanim.animation.reconstruct.reconstruct_shard`) exactly as one job wrote it before shards:
``<video>/<00000>.png``, ``<video>.mp4|gif``, ``explain/``, each file a hard link to the shard's (no second copy),
and ``index.json`` and ``l1_per_frame.csv`` from the videos' records, in the order of the videos' names. The
pooled L1 is the mean of every frame's L1 in that order, whatever the shard count (never a mean of shard means).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim.animation.reconstruct_records import (
    EXPLAIN_DIR,
    FRAMES,
    MLFLOW_IMAGES,
    OWNER,
    RECORDS,
    VIEWING,
    ReconstructJob,
    read_record,
)
from cpabanim.data import layout
from cpabanim.errors import DataError

log = logging.getLogger(__name__)


def shard_records(job: ReconstructJob) -> list[dict[str, Any]]:
    """Every shard's record, each done for this run's params and all made by the same code and checkpoint; a
    :class:`DataError` naming the shard job to run otherwise."""
    root, count = job.shards_root, job.count
    first = files.read_json(root / layout.shard_name(0) / layout.SHARD_MARKER, corrupt_ok=True)
    config = dict(first.get("config") or {})
    config["params"] = job.params()  # what this run asks for; code and checkpoint: the same in every shard
    return [layout.read_record(root / layout.shard_name(k), k, count, config, job.command) for k in range(count)]


def gather_reconstruction(job: ReconstructJob, out_root: Path) -> float:
    """Write ``out_root`` (the run's ``reconstruction/``) from the shards' folders; returns the L1 pooled over
    frames."""
    records = shard_records(job)
    names = sorted(name for record in records for name in record["videos"])
    if not names:
        raise DataError(f"no test videos were reconstructed in {job.shards_root}: run `cpabanim preprocess` first")
    layout.remove_other_shards(job.shards_root, job.count)
    files.fresh_output_folder(out_root, OWNER)
    index: dict[str, Any] = {**dict(records[0]["info"]), "device": records[0]["device"], "videos": {}}
    per_frame, previews = [], {}
    for name in names:
        shard = job.shards_root / layout.shard_name(layout.shard_of(name, job.count))
        values = read_record(files.contained_path(shard, RECORDS, f"{name}.npz"))
        if values is None:
            raise DataError(f"{shard}: the record of {name!r} is unreadable: run `cpabanim {job.command}` again")
        files.link_or_copy(files.contained_path(shard, FRAMES, name), files.contained_path(out_root, name))
        for suffix in (".mp4", ".gif"):
            viewing = files.contained_path(shard, VIEWING, name + suffix)
            if viewing.is_file():
                files.link_or_copy(viewing, files.contained_path(out_root, name + suffix))
        per_frame.append(values["l1"])
        index["videos"][name] = {"frames": len(values["l1"]), "l1": float(values["l1"].mean())}
        if "preview" in values:
            previews[name] = values["preview"]
    for k in range(job.count):  # the first video's shard holds the explanation pictures (none without a model)
        explained = job.shards_root / layout.shard_name(k) / EXPLAIN_DIR
        if explained.is_dir():
            files.link_or_copy(explained, out_root / EXPLAIN_DIR)
    write_table(out_root / "l1_per_frame.csv", names, per_frame)
    pooled = float(np.concatenate(per_frame).mean())
    index["l1"] = pooled
    (out_root / "index.json").write_text(json.dumps(index, indent=2))
    log_to_tracking(out_root, index, previews)
    log.info("reconstructed %d videos into %s: L1 %.5f (pooled over frames)", len(names), out_root, pooled)
    return pooled


def write_table(path: Path, names: list[str], per_frame: list[np.ndarray]) -> None:
    """``l1_per_frame.csv``: one row per frame of each video, as the videos were reconstructed."""
    with open(path, "w", newline="") as handle:
        table = csv.writer(handle)
        table.writerow(["video", "frame", "l1"])
        for name, l1 in zip(names, per_frame):
            table.writerows([name, t, f"{value:.6f}"] for t, value in enumerate(l1))


def log_to_tracking(out_root: Path, index: dict[str, Any], previews: dict[str, np.ndarray]) -> None:
    """The stage's MLflow run: the animator, the first videos' middle frames, the explanation, the pooled L1."""
    from cpabanim.tracking import log_artifact, log_image, log_metrics, set_tags

    set_tags({"cpabanim.animator": index["animator"]})
    for name, strip in previews.items():  # the middle frame, to browse runs in the MLflow UI
        log_image(strip, f"reconstruction/{name}.png")
    count = len(index["videos"])
    if count > MLFLOW_IMAGES:  # not a silent cap: the run says what it holds and where the rest is
        set_tags(
            {
                "reconstruction.previews": f"the first {MLFLOW_IMAGES} of {count} videos (MLFLOW_IMAGES in "
                f"cpabanim/animation/reconstruct.py); every video is in index.json and in {out_root}"
            }
        )
    if (out_root / EXPLAIN_DIR).is_dir():
        log_artifact(out_root / EXPLAIN_DIR, "explain")
    log_metrics({"recon/l1": index["l1"]})
    log_artifact(out_root / "index.json")
