"""What a reconstruct shard stores and its gather reads (:mod:`cpabanim.animation.reconstruct`): the run's job,
the shard's folders and each video's record, imported without torch (the gather is a small job).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OWNER = "cpabanim reconstruct"
MLFLOW_IMAGES = 4  # videos whose middle frame (source | driving | prediction) is logged to MLflow
EXPLAIN_DIR = "explain"  # pictures that explain the motion of the first video (cpabanim/viz/explain.py)
# a shard's folders: the predictions, the viewing videos, each video's record (written last)
FRAMES, VIEWING, RECORDS = "frames", "viewing", "records"


@dataclass(frozen=True)
class ReconstructJob:
    """One (experiment, seed) run's reconstruction: ``settings`` the ``reconstruct`` params, ``code`` the digest of
    the stage's code, ``command`` the CLI's words for this run (``reconstruct --experiment tps --set seed=1``), named
    in the gather's errors."""

    processed: Path
    checkpoints: Path
    shards_root: Path
    settings: dict[str, Any]
    seed: int
    code: str
    command: str

    @property
    def count(self) -> int:
        return int(self.settings["shards"])

    def params(self) -> dict[str, Any]:
        """What defines the outputs: the params less how the work is split."""
        return {"reconstruct": {k: v for k, v in self.settings.items() if k != "shards"}, "seed": self.seed}


def read_record(path: Path, made_by: str | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of a video's record, or None when it is missing, unreadable or (``made_by``) made otherwise."""
    try:
        with np.load(path) as stored:
            values = {key: stored[key] for key in stored.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    if made_by is not None and str(values.get("made_by")) != made_by:
        return None
    return values
