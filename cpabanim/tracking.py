"""MLflow tracking, through one small module: every stage logs with these functions and nothing else.

One pipeline invocation (``snakemake ...``, ``dvc repro``, or one stage run by hand) has one *parent* run;
each stage is a *child* run of it (see :func:`stage_run`). Which invocation a stage belongs to is found in
this order:

1. ``CPABANIM_PIPELINE_RUN`` in the environment (the Snakefile sets it once per invocation; export it yourself
   to group several invocations under one parent);
2. the nearest ancestor process that is ``dvc`` or ``snakemake`` (``dvc repro`` sets no per-invocation
   variable, but every stage command is its child process);
3. otherwise the stage process itself (a stage run by hand is its own pipeline).

The tracking URI comes from ``params['tracking']['uri']`` (``sqlite:///mlflow.db`` by default), or from
``MLFLOW_TRACKING_URI`` when set, so a remote server is one environment variable away. With sqlite, the first
connection creates the schema: concurrent first connections race on the migration, so every connection that
may create something (database, experiment, parent run) is serialised by a lock file in ``.cpabanim/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpabanim.config import flatten

log = logging.getLogger(__name__)

PIPELINE_RUN_ENV = "CPABANIM_PIPELINE_RUN"
LOCK_FILE = Path(".cpabanim") / "tracking.lock"
TAG_ROLE = "cpabanim.role"  # "pipeline" on parents, "stage" on children
TAG_PIPELINE = "cpabanim.pipeline_id"
TAG_STAGE = "cpabanim.stage"
_ORCHESTRATORS = ("snakemake", "dvc")
_PROCESS_START = int(time.time())
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


# ----------------------------------------------------------------------------------------------------------
# set-up


def enabled(params: dict[str, Any]) -> bool:
    return bool(params.get("tracking", {}).get("enabled", True))


# mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ itself: remember what we set, so that only
# a value the user set overrides params (otherwise the first URI used would stick for the whole process).
_SET_BY_US: set[str] = set()


def tracking_uri(params: dict[str, Any]) -> str:
    """The user's MLFLOW_TRACKING_URI if set, else params' ``tracking.uri``; relative sqlite paths made absolute
    (MLflow caches stores by URI: ``sqlite:///mlflow.db`` from two working directories would share one store)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = env if env and env not in _SET_BY_US else params["tracking"]["uri"]
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


@contextlib.contextmanager
def _creation_lock() -> Iterator[None]:
    """Serialise database creation/migration and parent-run creation between concurrent stage processes."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def configure(params: dict[str, Any]) -> str:
    """Point MLflow at the configured tracking server and experiment; return the experiment id.

    Safe to call from parallel jobs: the (one-time) sqlite schema creation runs under a lock.
    """
    import mlflow

    with _creation_lock():
        uri = tracking_uri(params)
        if uri != os.environ.get("MLFLOW_TRACKING_URI"):  # the user's own variable stays the user's
            _SET_BY_US.add(uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(params["tracking"]["experiment"])
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            # MLflow 3's UI opens untyped experiments in its GenAI layout; this is model training
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    return experiment.experiment_id


# ----------------------------------------------------------------------------------------------------------
# which pipeline invocation are we part of?


def _process_info(pid: int) -> tuple[int, list[str], str] | None:
    """(parent pid, argv, start time in clock ticks) of a process, from /proc; None where unavailable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its closing parenthesis
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), [a.decode(errors="replace") for a in argv if a], fields[19]


def _orchestrator_of(argv: list[str]) -> str | None:
    for arg in argv[:3]:
        name = Path(arg).name
        if name in _ORCHESTRATORS:
            return name
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in _ORCHESTRATORS:
        return argv[2]
    return None


def pipeline_id() -> str:
    """A stable id of the current pipeline invocation (see the module docstring)."""
    explicit = os.environ.get(PIPELINE_RUN_ENV)
    if explicit:
        return explicit
    pid = os.getppid()
    for _ in range(12):  # a few shells / wrappers between the orchestrator and the stage at most
        info = _process_info(pid)
        if info is None:
            break
        parent, argv, started = info
        tool = _orchestrator_of(argv)
        if tool:
            return f"{tool}-{pid}-{started}"
        if parent <= 1:
            break
        pid = parent
    return f"manual-{os.getpid()}-{_PROCESS_START}"


def orchestrator_of(pipeline: str) -> str:
    head = pipeline.split("-", 1)[0]
    return head if head in (*_ORCHESTRATORS, "manual") else "custom"


# ----------------------------------------------------------------------------------------------------------
# what a run is tagged with


def git_tags(cwd: str | Path = ".") -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` (tracked files modified), or nothing outside a git work tree."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=20
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def dvc_lock_tags(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """``dvc.<stage>.<out>`` = md5 of each output recorded in dvc.lock (data and model versions)."""
    from cpabanim.config import yaml_load

    path = Path(lock_path)
    if not path.is_file():
        return {}
    try:
        lock = yaml_load(path.read_text()) or {}
    except Exception:  # a half-written lock file must never fail a stage
        return {}
    tags = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            digest = out.get("md5") or out.get("hash")
            if digest and out.get("path"):
                tags[f"dvc.{stage}.{out['path']}"] = str(digest)
    return tags


def dataset_tags(params: dict[str, Any]) -> dict[str, str]:
    """Clip counts per split of the processed dataset (each metric should be read next to them)."""
    root = Path(params["paths"]["processed"])
    tags = {}
    for split in ("train", "test"):
        folder = root / split
        if folder.is_dir():
            tags[f"data.clips.{split}"] = str(sum(1 for p in folder.iterdir() if not p.name.startswith(".")))
    source = params.get("data", {}).get("source") if isinstance(params.get("data"), dict) else None
    if source:
        tags["data.source"] = str(source)
    return tags


def resolved_device(params: dict[str, Any]) -> str:
    device = params.get("device", "auto")
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return "cpu"


def run_tags(params: dict[str, Any]) -> dict[str, str]:
    """Everything that identifies what a run ran on: code, data, device, preset."""
    tags = {**git_tags(), **dataset_tags(params), "device": resolved_device(params)}
    tags["preset"] = str(params.get("preset") or "default")
    if os.environ.get("DVC_STAGE"):  # under `dvc repro`: dvc.lock describes this run's data and model
        tags.update(dvc_lock_tags())
    return tags


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def flat_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: _param_value(v) for k, v in flatten(params).items()}


# ----------------------------------------------------------------------------------------------------------
# runs


def find_or_create_parent(params: dict[str, Any], experiment_id: str | None = None) -> str:
    """The id of this invocation's parent run, created (with params and tags) by the first stage to ask."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if experiment_id is None:
        experiment_id = configure(params)
    pid = pipeline_id()
    client = MlflowClient()
    with _creation_lock():
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TAG_PIPELINE}` = '{pid}' and tags.`{TAG_ROLE}` = 'pipeline'",
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        orchestrator = orchestrator_of(pid)
        name = f"{orchestrator}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = {
            TAG_ROLE: "pipeline",
            TAG_PIPELINE: pid,
            "pipeline.orchestrator": orchestrator,
            **run_tags(params),
        }
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        for chunk in _chunks(flat_params(params), 100):
            client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in chunk.items()])
        log.info("MLflow: pipeline run %s (%s) in experiment %s", name, run.info.run_id, experiment_id)
        return run.info.run_id


def _chunks(mapping: dict[str, str], size: int) -> Iterator[dict[str, str]]:
    items = list(mapping.items())
    for start in range(0, len(items), size):
        yield dict(items[start : start + size])


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Open the MLflow run of one stage, as a child of the invocation's parent run.

    The child gets the flattened params, the code/data/device tags and ``cpabanim.stage``; when the stage
    ends, the parent is marked FINISHED (or FAILED) and its tags refreshed. With ``tracking.enabled: false``
    this yields None and the ``log_*`` functions do nothing.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    if not enabled(params):
        yield None
        return
    experiment_id = configure(params)
    parent_id = find_or_create_parent(params, experiment_id)
    pid = pipeline_id()
    all_tags = {TAG_ROLE: "stage", TAG_STAGE: stage, TAG_PIPELINE: pid, **run_tags(params), **(tags or {})}
    status = "FAILED"
    with mlflow.start_run(run_name=stage, parent_run_id=parent_id, tags=all_tags) as run:
        client = MlflowClient()
        for chunk in _chunks(flat_params(params), 100):
            client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in chunk.items()])
        try:
            yield run
            status = "FINISHED"
        finally:
            with contextlib.suppress(Exception):  # tracking must never turn a finished stage into a failure
                for key, value in run_tags(params).items():
                    client.set_tag(parent_id, key, value)
                client.set_tag(parent_id, f"stage.{stage}", status.lower())
                client.set_terminated(parent_id, status)


def _active() -> bool:
    import mlflow

    return mlflow.active_run() is not None


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log numbers to the stage's run (no-op when tracking is disabled or no stage run is open)."""
    import mlflow

    if _active():
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_image(image, name: str) -> None:
    """Log an (H, W, 3) uint8 array as an image artifact (e.g. ``grids/step_000100.png``)."""
    import mlflow

    if _active():
        mlflow.log_image(image, artifact_file=name)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    """Log a file (or every file of a folder) as artifacts of the stage's run."""
    import mlflow

    if not _active():
        return
    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def parent_run_id() -> str | None:
    """The parent (pipeline) run of the open stage run, if any."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_run(run.info.run_id).data.tags.get("mlflow.parentRunId")
