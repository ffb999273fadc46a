"""What each experiment's MLflow parent run receives from the report: its metrics, evaluation files, the
report's figures, a few viewing videos (under names the MLflow UI can open) and, once per checkpoint, the
trained model.

Contract: the caller resolves the parent run (None: tracking is off, nothing is logged); a parent this report
created is closed FINISHED; a checkpoint already logged to a parent is not logged again.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from cpabanim import tracking
from cpabanim.errors import CpabanimError
from cpabanim.tracking import runs

log = logging.getLogger(__name__)

MAX_MEDIA_ARTIFACTS = 8  # GIF/MP4 files per folder logged to MLflow: enough to look at, small enough to keep


def _media(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".gif", ".mp4"))
    return files[: 2 * MAX_MEDIA_ARTIFACTS]


def log_experiment(
    parent: str | None,
    name: str,
    metrics: dict[str, float],
    paths: dict[str, Path],
    report: dict[str, Path],
    log_model: bool,
) -> None:
    """Metrics, figures, media and (``log_model``) the trained model of experiment ``name`` onto its MLflow parent
    run ``parent`` (None: tracking is off, nothing to do). ``paths``: the experiment's inputs of the report stage,
    ``report``: the report's outputs."""
    if parent is None:
        return
    import mlflow

    client = runs.mlflow_client()
    entities = [mlflow.entities.Metric(k, v, 0, 0) for k, v in metrics.items()]
    for start in range(0, len(entities), 500):
        client.log_batch(parent, metrics=entities[start : start + 500])
    files = [(paths["metrics"], "evaluation"), (paths["per_video"], "evaluation")]
    files += [(report[k], "report") for k in ("metrics_png", "samples_png", "loss_png", "html")]
    for kind in ("reconstruction", "animation"):
        root = paths[kind]
        files += [
            (p, tracking.safe_artifact_name(f"{kind}/{p.parent.relative_to(root)}".rstrip("/."))) for p in _media(root)
        ]
    with tempfile.TemporaryDirectory() as scratch:
        for path, artifact_path in files:
            if path.is_file():
                client.log_artifact(parent, str(safe_copy(path, Path(scratch))), artifact_path=artifact_path)
    logged = log_trained_model(paths, parent) if log_model else None
    if parent != runs.parent_run_id() and client.get_run(parent).info.status == "RUNNING":
        # a parent this report created (its experiment ran no other stage in this invocation) would stay RUNNING
        # with no end time; the report's own parent is closed by its stage context
        client.set_terminated(parent, "FINISHED")
    log.info(
        "MLflow: %d metrics, %d artifacts%s logged to the parent run of %s",
        len(metrics),
        len(files),
        f" and the model {logged}" if logged else "",
        name,
    )


def safe_copy(path: Path, scratch: Path) -> Path:
    """``path``, or a copy of it in ``scratch`` under a name the MLflow UI can open (no '#', '?', '%': its artifact
    endpoint answers 400 "Invalid path" for them, docs/pipeline.md)."""
    safe = tracking.safe_artifact_name(path.name)
    if safe == path.name:
        return path
    folder = Path(tempfile.mkdtemp(dir=scratch))  # one folder per file: two names may map to the same safe name
    return Path(shutil.copy2(path, folder / safe))


def log_trained_model(paths: dict[str, Path], parent: str) -> str | None:
    """The experiment's checkpoint as an MLflow PyTorch model on its parent run, once per checkpoint: a parent
    that already holds a model of this checkpoint (a report re-run by hand joins the newest parent) keeps it."""
    from mlflow.entities import LoggedModelStatus

    from cpabanim.config.paths import CHECKPOINT_NAME
    from cpabanim.reporting.mlflow_model import ARTIFACT_NAME, CHECKSUM_TAG, checkpoint_checksum, log_checkpoint_model

    checkpoint = paths["checkpoints"] / CHECKPOINT_NAME
    if not checkpoint.is_file():
        log.warning("no checkpoint at %s: no model logged", checkpoint)
        return None
    checksum = checkpoint_checksum(checkpoint)
    client = runs.mlflow_client()
    run = client.get_run(parent)
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{parent}' AND name = '{ARTIFACT_NAME}'"
    )
    if any(m.tags.get(CHECKSUM_TAG) == checksum and m.status == LoggedModelStatus.READY for m in models):
        return None
    return log_checkpoint_model(checkpoint, parent, frame_size(paths["processed"]))


def frame_size(processed: Path) -> int:
    """Side of the test frames (the logged model's input size)."""
    from PIL import Image

    first = next((p for p in sorted((processed / "test").glob("*/*.png"))), None)
    if first is None:
        raise CpabanimError(f"no test frames under {processed / 'test'}: run `cpabanim preprocess` first")
    with Image.open(first) as image:
        return int(image.size[0])
