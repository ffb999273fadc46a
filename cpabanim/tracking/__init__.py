"""MLflow tracking as the stages see it: log numbers, tags, images and files to the open stage run.

The CLI opens one MLflow run per stage (:func:`cpabanim.tracking.runs.stage_context`); these functions log into it
and do nothing when none is open (library use: a notebook, a GPU node without MLflow). A failing store degrades
tracking for the rest of the stage (one warning) instead of failing the stage. Where runs live:
:mod:`cpabanim.tracking.store`; what they record about their origin: :mod:`cpabanim.tracking.provenance`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


_DEGRADED = False  # set when a tracking call failed during the current stage (see _safely)


def begin_stage() -> None:
    """Degraded tracking is a property of one stage run: a new stage starts with a working store."""
    global _DEGRADED
    _DEGRADED = False


def _open_run_mlflow():
    """``mlflow`` when a stage run is open and tracking works, else None. A process that never imported mlflow
    has no run open: library use of the trainer (a notebook, a GPU machine without mlflow) skips the import."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is None or _DEGRADED or mlflow.active_run() is None:
        return None
    return mlflow


def _safely(action: str, call) -> None:
    """Tracking calls made during a stage's work: ``call(mlflow)`` when a run is open. A failing store (disk full,
    server down) degrades tracking (one warning, a tag when possible) instead of killing the stage."""
    global _DEGRADED
    mlflow = _open_run_mlflow()
    if mlflow is None:
        return
    try:
        call(mlflow)
    except Exception as err:  # noqa: BLE001 - any store failure
        _DEGRADED = True
        log.warning(
            "MLflow: %s failed (%s); tracking is degraded for the rest of this stage, the work goes on", action, err
        )
        with contextlib.suppress(Exception):
            mlflow.set_tag("tracking.degraded", f"{action}: {err}"[:500])


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numbers to the stage's run (no-op when tracking is disabled or no stage run is open)."""
    _safely("log_metrics", lambda mlflow: mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step))


def set_tags(tags: dict[str, str]) -> None:
    _safely("set_tags", lambda mlflow: mlflow.set_tags(tags))


def log_image(image, name: str) -> None:
    """Log an (H, W, 3) uint8 array as an image artifact (e.g. ``grids/step_000100.png``)."""
    _safely("log_image", lambda mlflow: mlflow.log_image(image, artifact_file=safe_artifact_name(name)))


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file, or every file of a folder (at its relative place), as artifacts of the stage's run, under
    :func:`safe_artifact_name` paths: each file of a folder goes through the same rule as a single file, so no
    artifact of a run has a path the MLflow UI refuses."""
    path = Path(path)
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            place = file.parent.relative_to(path).as_posix()
            _log_file(file, "/".join(part for part in (artifact_path, place) if part and part != ".") or None)
    elif path.is_file():
        _log_file(path, artifact_path)


def _log_file(file: Path, artifact_path: str | None) -> None:
    """One file as ``<safe artifact_path>/<safe file name>`` (:func:`safe_copy`)."""
    folder = safe_artifact_name(artifact_path) if artifact_path else None

    def upload(mlflow) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            mlflow.log_artifact(str(safe_copy(file, Path(scratch))), artifact_path=folder)

    _safely("log_artifact", upload)


def safe_copy(path: Path, scratch: Path) -> Path:
    """``path``, or a copy of it in ``scratch`` under its :func:`safe_artifact_name` (MLflow names an artifact after
    the file it uploads, and its artifact endpoint answers 400 "Invalid path" for '#', '?', '%': docs/pipeline.md)."""
    safe = safe_artifact_name(path.name)
    if safe == path.name:
        return path
    folder = Path(tempfile.mkdtemp(dir=scratch))  # one folder per file: two names may map to the same safe name
    return Path(shutil.copy2(path, folder / safe))


def safe_artifact_name(name: str) -> str:
    """MLflow's UI refuses artifact paths with ``#``, ``?``, ``%`` and the like: keep letters, digits, ``._-/``.

    The guard at the MLflow boundary for any path; names made by :mod:`cpabanim.data.names` (videos, pairs) are
    already safe and pass unchanged."""
    return re.sub(r"[^A-Za-z0-9._/-]", "_", name)
