"""What an evaluate shard stores and its gather reads (docs/evaluation.md, "Shards and resume"): the run's job, and one
record per item (a reconstructed video, an animated pair), imported without torch (the gather is a small job).

In the run's ``shards/evaluate/<kkk>/``: ``recon/<video>.npz`` (the per-frame values of the model and of the
copy-source baseline, and FID features), ``anim/<pair>.npz`` (those of the source-unchanged baseline and of each
mode), and ``done.json``, the shard's record, written last.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim.data import layout

RECON, ANIM = "recon", "anim"  # a shard's folders of records: reconstructed videos, animated pairs
CACHE_FOLDER = ".eval_cache"  # the extraction cache's folder name under {paths.outputs} (and in .dvcignore)


@dataclass(frozen=True)
class EvaluateJob:
    """One (experiment, seed) run's evaluation: ``settings`` the ``evaluate`` params that define its metrics
    (``metrics``, ``keypoints``, ``identity``, the extractors' options, ``shards``), ``cache_dir`` the extraction
    cache (None: off), ``code`` the digest of the stage's code, ``command`` the CLI's words for this run."""

    processed: Path
    reconstruction: Path
    animation: Path
    shards_root: Path
    outputs: dict[str, Path]  # metrics, unavailable, per_video: what the gather writes
    settings: dict[str, Any]
    cache_dir: Path | None
    device: str
    code: str
    command: str

    @property
    def count(self) -> int:
        return int(self.settings["shards"])

    def params(self) -> dict[str, Any]:
        """What defines the metrics: the params less how the work is split."""
        return {k: v for k, v in self.settings.items() if k != "shards"}

    def folder(self, shard: int) -> Path:
        return self.shards_root / layout.shard_name(shard)


def write_record(
    path: Path, made_by: str, groups: dict[str, dict[str, np.ndarray]], features: dict[str, np.ndarray], frames: int
) -> None:
    """One item's record: the per-frame values of each group (``model``, ``baseline``; ``unchanged`` and each
    mode), in their order, its frame count, FID features, and ``made_by``, written whole."""
    arrays = {f"{group}/{name}": v for group, values in groups.items() for name, v in values.items()}
    order = {group: list(values) for group, values in groups.items()}
    meta = json.dumps({"made_by": made_by, "order": order, "frames": frames})
    # np.savez names its members after the keys: "/" is kept inside the zip, so the keys come back as they went in
    files.write_atomically(path, lambda handle: np.savez(handle, meta=np.array(meta), **arrays, **features))


def read_item(path: Path) -> dict[str, Any] | None:
    """``{"made_by", "frames", "groups": {group: {metric: values}}, "features": {...}}`` of an item's record, or None
    when it is missing or unreadable."""
    try:
        with np.load(path) as stored:
            meta = json.loads(str(stored["meta"]))
            groups = {g: {name: stored[f"{g}/{name}"] for name in names} for g, names in meta["order"].items()}
            features = {k: stored[k] for k in ("fid_real", "fid_fake") if k in stored.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return {"made_by": meta["made_by"], "frames": meta["frames"], "groups": groups, "features": features}


def kept_record(path: Path, made_by: str) -> bool:
    item = read_item(path) if path.is_file() else None
    return item is not None and item["made_by"] == made_by
