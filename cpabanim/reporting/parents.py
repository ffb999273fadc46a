"""What each experiment's MLflow runs receive from the report: each seed's run its metrics, evaluation files and,
once per checkpoint, the trained model (registered per experiment, one version per checkpoint); the parent the
aggregates over its seeds (each metric's mean under its own name, ``<metric>/sd`` and ``<metric>/n``), the
report's figures and tables and the viewing videos of a few test videos and pairs of its shown seed (under names
the MLflow UI can open, with a note naming every one left out).

Contract: the caller resolves the parent run (None: tracking is off, nothing is logged); a parent this report
created is closed FINISHED; a parent of an earlier invocation is never re-opened or ended (its duration stays
that invocation's); a checkpoint already logged to a parent is not logged again.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from cpabanim import tracking
from cpabanim.errors import CpabanimError, DataError
from cpabanim.reporting.recorded import Recorded
from cpabanim.tracking import runs

log = logging.getLogger(__name__)

MAX_MEDIA_FOLDERS = 8  # videos (reconstruction/) or pairs (animation/, all modes) whose GIF/MP4 files are logged
LEFT_OUT_NOTE = "left_out.txt"  # <kind>/left_out.txt on the parent: the media files that were not logged


def select_media(root: Path) -> tuple[list[Path], list[Path]]:
    """(logged, left out): the GIF/MP4 files of the first :data:`MAX_MEDIA_FOLDERS` top-level folders of
    ``root`` (a whole video, or a pair with all its modes), and every other one: enough to look at in the UI,
    small enough to keep; the outputs folder holds them all."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".gif", ".mp4"))
    kept = set(sorted({p.relative_to(root).parts[0] for p in files})[:MAX_MEDIA_FOLDERS])
    logged = [p for p in files if p.relative_to(root).parts[0] in kept]
    return logged, [p for p in files if p.relative_to(root).parts[0] not in kept]


def left_out_note(kind: str, root: Path, logged: list[Path], left_out: list[Path]) -> str:
    """The text of ``<kind>/left_out.txt``: how many media files were not logged, why, where they are, and each
    one's path."""
    head = (
        f"{len(left_out)} of {len(logged) + len(left_out)} GIF/MP4 files of {kind}/ were not logged to MLflow: "
        f"only those of the first {MAX_MEDIA_FOLDERS} folders are (MAX_MEDIA_FOLDERS in cpabanim/reporting/"
        f"parents.py). All of them are in {root}. Not logged:"
    )
    return "\n".join([head, *(str(p.relative_to(root)) for p in left_out)]) + "\n"


def log_metrics_to(run_id: str, metrics: dict[str, float], model_id: str | None = None) -> None:
    """``metrics`` onto run ``run_id`` in batches (``model_id``: the logged model they describe)."""
    import mlflow

    now = int(time.time() * 1000)
    entities = [mlflow.entities.Metric(k, v, now, 0, model_id=model_id) for k, v in metrics.items()]
    for start in range(0, len(entities), 500):
        runs.mlflow_client().log_batch(run_id, metrics=entities[start : start + 500])


def log_files(run_id: str, files: list[tuple[Path, str]], scratch: Path) -> int:
    """Each existing (file, artifact folder) onto ``run_id`` under a name the UI opens; returns how many."""
    client = runs.mlflow_client()
    existing = [(path, folder) for path, folder in files if path.is_file()]
    for path, folder in existing:
        client.log_artifact(run_id, str(tracking.safe_copy(path, scratch)), artifact_path=folder)
    return len(existing)


def log_seed_run(
    run_id: str | None,
    name: str,
    seed: int,
    metrics: dict[str, float],
    paths: dict[str, Path],
    log_model: bool,
    recorded: Recorded | None = None,
) -> None:
    """One seed's metrics, evaluation files and (``log_model``) trained model onto its run ``run_id`` (None:
    tracking is off). ``paths``: the seed's inputs of the report stage."""
    if run_id is None:
        return
    info = log_trained_model(paths, run_id, name, metrics, recorded, seed) if log_model else None
    # the model's page shows the metrics of its checkpoint
    log_metrics_to(run_id, metrics, info.model_id if info is not None else None)
    with tempfile.TemporaryDirectory() as scratch:
        count = log_files(run_id, [(paths["metrics"], "evaluation"), (paths["per_video"], "evaluation")], Path(scratch))
    runs.end_parent_created_by_report(run_id)
    shown = f" and the model {info.model_uri}" if info is not None else ""
    log.info(
        "MLflow: %d metrics, %d artifacts%s logged to the run of %s seed %d", len(metrics), count, shown, name, seed
    )


def log_experiment(
    parent: str | None,
    name: str,
    aggregates: dict[str, float],
    shown: dict[str, Path],
    report: dict[str, Path],
) -> None:
    """The aggregates over the seeds (``<metric>`` = mean, ``<metric>/sd``, ``<metric>/n``), the report's figures
    and tables and the media of the shown seed (``shown``: its inputs of the report stage) onto experiment
    ``name``'s MLflow parent run ``parent`` (None: tracking is off, nothing to do)."""
    if parent is None:
        return
    log_metrics_to(parent, aggregates)
    files = [(path, "report") for path in report.values()]  # files only: log_files skips the videos/ folder
    with tempfile.TemporaryDirectory() as scratch:
        for kind in ("reconstruction", "animation"):
            files += media_files(parent, kind, shown[kind], Path(scratch))
        count = log_files(parent, files, Path(scratch))
    runs.end_parent_created_by_report(parent)
    log.info("MLflow: %d aggregate metrics, %d artifacts logged to the parent run of %s", len(aggregates), count, name)


def media_files(parent: str, kind: str, root: Path, scratch: Path) -> list[tuple[Path, str]]:
    """(file, artifact folder) of the media of ``kind`` to log; when some are left out, the note saying which
    (``<kind>/left_out.txt``), a ``report.<kind>.left_out`` tag on ``parent`` and a log line."""
    logged, left_out = select_media(root)
    files = [(p, tracking.safe_artifact_name(f"{kind}/{p.parent.relative_to(root)}".rstrip("/."))) for p in logged]
    if left_out:
        note = scratch / kind / LEFT_OUT_NOTE
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(left_out_note(kind, root, logged, left_out))
        files.append((note, kind))
        summary = f"{len(left_out)} of {len(logged) + len(left_out)} files (see {kind}/{LEFT_OUT_NOTE})"
        runs.mlflow_client().set_tag(parent, f"report.{kind}.left_out", summary)
        log.info("MLflow: %s of %s not logged: %s", kind, parent, summary)
    return files


def log_trained_model(
    paths: dict[str, Path],
    parent: str,
    experiment: str,
    metrics: dict[str, float] | None = None,
    recorded: Recorded | None = None,
    seed: int | None = None,
):
    """A seed's model (the avd stage's checkpoint: the trained model with its AVD network) as an MLflow PyTorch
    model ``cpabanim-<experiment>`` on that seed's run ``parent``, registered as the newest version of the
    experiment's registered model; once per checkpoint: a run that already holds a model of this checkpoint (a
    report re-run by hand joins the newest parent) keeps it. Returns the logged model's ``ModelInfo`` (None:
    nothing logged)."""
    from mlflow.entities import LoggedModelStatus

    from cpabanim.config.paths import CHECKPOINT_NAME
    from cpabanim.reporting.mlflow_model import (
        CHECKSUM_TAG,
        checkpoint_checksum,
        log_checkpoint_model,
        model_name,
        register_model,
    )

    checkpoint = paths["avd_checkpoints"] / CHECKPOINT_NAME  # the model with its AVD network: the avd stage's
    if not checkpoint.is_file():
        log.warning("no checkpoint at %s: no model logged", checkpoint)
        return None
    checksum = checkpoint_checksum(checkpoint)
    client = runs.mlflow_client()
    run = client.get_run(parent)
    name = model_name(experiment)
    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{parent}' AND name = '{name}'"
    )
    if any(m.tags.get(CHECKSUM_TAG) == checksum and m.status == LoggedModelStatus.READY for m in models):
        return None
    info = log_checkpoint_model(checkpoint, parent, frame_size(paths["processed"]), name)
    register_model(
        info,
        experiment,
        model_description(experiment, recorded),
        version_description(info, parent, checkpoint, metrics or {}, seed),
    )
    return info


def model_description(experiment: str, recorded: Recorded | None) -> str:
    """The registered model's description: what the model is, and the experiment's recorded parameters that
    differ from the built-in defaults."""
    from cpabanim.config.schema import defaults
    from cpabanim.tracking.provenance import flat_params

    base = flat_params(defaults())
    changed = {k: v for k, v in (recorded.values if recorded else {}).items() if base.get(k) != v}
    lines = [
        f"cpabanim experiment `{experiment}`: the animation model of its checkpoint (one version per checkpoint "
        "the report logged). Input (B, 6, H, W) float32 = source and driving frames stacked on channels, output "
        "the predicted driving frame (B, 3, H, W); see docs/pipeline.md.",
        "",
        "Recorded parameters that differ from the defaults"
        + (f" ({recorded.describe()}):" if recorded else ": unknown (no record)."),
        *(f"- {k} = {v}" for k, v in sorted(changed.items())),
    ]
    if recorded and not changed:
        lines.append("- none: the built-in defaults")
    return "\n".join(lines)


def version_description(info, run_id: str, checkpoint: Path, metrics: dict[str, float], seed: int | None = None) -> str:
    """A model version's description: its checkpoint and seed, the run it was logged to, its metrics."""
    shown = {k: v for k, v in metrics.items() if not k.startswith("baseline/")}
    trained = f" (seed {seed})" if seed is not None else ""
    lines = [f"checkpoint {checkpoint}{trained}, logged to run {run_id} as {info.model_uri}.", "", "Metrics:"]
    lines += [f"- {k} = {v:.4g}" for k, v in sorted(shown.items())] or ["- none"]
    return "\n".join(lines)


def frame_size(processed: Path) -> int:
    """Side of the test frames (the logged model's input size)."""
    from cpabanim.data.frames import test_videos
    from cpabanim.data.video import read_frame_at

    try:
        return int(read_frame_at(test_videos(processed, max_videos=1)[0], 0).shape[1])
    except DataError as err:
        raise CpabanimError(f"no test frames in {processed} ({err}): run `cpabanim preprocess` first") from None
