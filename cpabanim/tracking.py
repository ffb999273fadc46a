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
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpabanim.config import flatten
from cpabanim.errors import ConfigError

log = logging.getLogger(__name__)

PIPELINE_RUN_ENV = "CPABANIM_PIPELINE_RUN"
TAG_EXPERIMENT = "cpabanim.experiment"
TAG_PID = "cpabanim.pid"
TAG_HOST = "cpabanim.host"
TAG_ROLE = "cpabanim.role"  # "pipeline" on parents, "stage" on children
TAG_PIPELINE = "cpabanim.pipeline_id"
TAG_STAGE = "cpabanim.stage"
_ORCHESTRATORS = ("snakemake", "dvc")
_PROCESS_START = int(time.time())
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


# ----------------------------------------------------------------------------------------------------------
# set-up


def enabled(params: dict[str, Any]) -> bool:
    return bool(params["tracking"]["enabled"])


def check_uri(uri: str) -> None:
    """Refuse, before any work, the stores MLflow 3 would only reject after the stage ran (file stores)."""
    if uri.startswith("file:") or "://" not in uri:
        raise ConfigError(f"tracking URI {uri!r}: MLflow's file store is not supported; use sqlite:///mlflow.db "
                          "or an http(s):// server (set tracking.uri or MLFLOW_TRACKING_URI)")


# mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ itself: remember what we set, so that only
# a value the user set overrides params (otherwise the first URI used would stick for the whole process).
_SET_BY_US: set[str] = set()


SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, None for any other URI."""
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def tracking_uri(params: dict[str, Any]) -> str:
    """The user's MLFLOW_TRACKING_URI if set, else params' ``tracking.uri``; relative sqlite paths made absolute
    (MLflow caches stores by URI: ``sqlite:///mlflow.db`` from two working directories would share one store)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = env if env and env not in _SET_BY_US else params["tracking"]["uri"]
    database = sqlite_path(uri)
    if database is not None and not database.is_absolute():
        uri = SQLITE_PREFIX + str(database.resolve())
    return uri


def lock_path(uri: str) -> Path:
    """The lock of a tracking store: next to a sqlite file (shared by every checkout that uses it), else one per
    URI in the temp folder (parent-run creation by parallel jobs against one server)."""
    database = sqlite_path(uri)
    if database is not None:
        return database.with_name(database.name + ".lock")
    import hashlib
    import tempfile

    return Path(tempfile.gettempdir()) / f"cpabanim-tracking-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise database creation/migration and parent-run creation between concurrent stage processes."""
    path = lock_path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
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

    uri = tracking_uri(params)
    check_uri(uri)
    with _creation_lock(uri):
        if uri != os.environ.get("MLFLOW_TRACKING_URI"):  # the user's own variable stays the user's
            _SET_BY_US.add(uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(params["tracking"]["experiment"])
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            # labels the experiment "Machine learning" in MLflow 3's UI; the layout the UI opens is the browser's
            # choice, which the page `cpabanim ui` prints asks for
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
    source = params["data"]["source"]
    if source:
        tags["data.source"] = str(source)
    return tags


def resolved_device(params: dict[str, Any]) -> str:
    from cpabanim.device import resolve_device

    return str(resolve_device(params["device"]))


def run_tags(params: dict[str, Any]) -> dict[str, str]:
    """Everything that identifies what a run ran on: code, data, device, preset."""
    tags = {**git_tags(), **dataset_tags(params), "device": resolved_device(params)}
    tags["preset"] = str(params["preset"] or "default")
    tags[TAG_EXPERIMENT] = str(params["experiment"])
    if os.environ.get("DVC_STAGE"):  # under `dvc repro`: dvc.lock describes this run's data and model
        tags.update(dvc_lock_tags())
    return tags


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def flat_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: _param_value(v) for k, v in flatten(params).items()}




# ----------------------------------------------------------------------------------------------------------
# runs: one parent per experiment per invocation, one child per stage


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _log_params(run_id: str, params: dict[str, Any]) -> None:
    import mlflow

    flat = flat_params(params)
    items = list(flat.items())
    for start in range(0, len(items), 100):
        _client().log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in items[start:start + 100]])


def find_or_create_parent(params: dict[str, Any], experiment_id: str | None = None) -> str:
    """This invocation's parent run of ``params['experiment']``, created by the first stage that asks.

    A stage run by hand (no orchestrator, no ``CPABANIM_PIPELINE_RUN``) joins the newest parent of its
    experiment instead of starting a new one.
    """
    from cpabanim.config import changed_from_defaults

    experiment_id = experiment_id or configure(params)
    name = str(params["experiment"])
    pid = pipeline_id()
    client = _client()
    where = f"tags.`{TAG_ROLE}` = 'pipeline' and tags.`{TAG_EXPERIMENT}` = '{name}'"
    if not pid.startswith("manual-"):
        where += f" and tags.`{TAG_PIPELINE}` = '{pid}'"
    with _creation_lock(tracking_uri(params)):
        found = client.search_runs([experiment_id], filter_string=where, order_by=["attributes.start_time DESC"],
                                   max_results=1)
        if found:
            return found[0].info.run_id
        orchestrator = orchestrator_of(pid)
        tags = {TAG_ROLE: "pipeline", TAG_PIPELINE: pid, "pipeline.orchestrator": orchestrator, **run_tags(params),
                **{f"param.{k}": _param_value(v) for k, v in changed_from_defaults(params).items()
                   if not k.startswith(("paths.", "tracking."))}}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        _log_params(run.info.run_id, params)
        log.info("MLflow: parent run %s of experiment %s (%s)", run.info.run_id, name, orchestrator)
        return run.info.run_id


def _mark_killed(experiment_id: str, stage: str, experiment: str) -> None:
    """Runs of this stage left RUNNING by a process that no longer exists on this host are marked KILLED."""
    import socket

    client = _client()
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.`{TAG_STAGE}` = '{stage}' and tags.`{TAG_EXPERIMENT}` = '{experiment}' and attributes.status = 'RUNNING'"))
    for run in runs:
        tags = run.data.tags
        if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
            continue
        if not Path(f"/proc/{tags[TAG_PID]}").exists():
            client.set_terminated(run.info.run_id, "KILLED")
            log.info("MLflow: run %s of stage %s was left running by a killed process: marked KILLED", run.info.run_id,
                     stage)


_DEGRADED = False  # set when a tracking call failed during the current stage (see _safely)


@contextlib.contextmanager
def stage_context(stage: str, params: dict[str, Any], used: dict[str, Any]) -> Iterator[Any]:
    """The MLflow run of one stage, opened before the work by the CLI, as a child of its experiment's parent.

    ``used``: exactly the parameters the stage runs with (logged as the child's params). A stage that raises is
    recorded FAILED with the error as the ``error`` tag; the parent gets ``stage.<name>`` = finished/failed.
    With ``tracking.enabled: false`` this yields None and the ``log_*`` functions do nothing.
    """
    import socket

    import mlflow

    global _DEGRADED
    _DEGRADED = False  # degraded tracking is a property of one stage run
    if not enabled(params):
        yield None
        return
    experiment_id = configure(params)
    parent_id = find_or_create_parent(params, experiment_id)
    _mark_killed(experiment_id, stage, str(params["experiment"]))
    tags = {TAG_ROLE: "stage", TAG_STAGE: stage, TAG_PIPELINE: pipeline_id(), TAG_PID: str(os.getpid()),
            TAG_HOST: socket.gethostname(), **run_tags(params)}
    run = mlflow.start_run(run_name=stage, parent_run_id=parent_id, tags=tags)
    client = _client()
    status = "FAILED"
    try:
        _log_params(run.info.run_id, used)
        yield run
        status = "FINISHED"
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        with contextlib.suppress(Exception):
            client.set_tag(run.info.run_id, "error", f"{type(err).__name__}: {err}"[:5000])
        raise
    finally:
        with contextlib.suppress(Exception):  # tracking must never turn a finished stage into a failure
            mlflow.end_run(status)
            for key, value in run_tags(params).items():  # data now exists that did not when the parent was made
                client.set_tag(parent_id, key, value)
            client.set_tag(parent_id, f"stage.{stage}", status.lower())
            client.set_terminated(parent_id, "FAILED" if status != "FINISHED" else "FINISHED")


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
        log.warning("MLflow: %s failed (%s); tracking is degraded for the rest of this stage, the work goes on",
                    action, err)
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
    """Log a file (or every file of a folder) as artifacts of the stage's run."""
    path = Path(path)
    if path.is_dir():
        _safely("log_artifacts", lambda mlflow: mlflow.log_artifacts(str(path), artifact_path=artifact_path))
    elif path.is_file():
        _safely("log_artifact", lambda mlflow: mlflow.log_artifact(str(path), artifact_path=artifact_path))


def safe_artifact_name(name: str) -> str:
    """MLflow's UI refuses artifact paths with ``#``, ``?``, ``%`` and the like: keep letters, digits, ``._-/``."""
    import re

    return re.sub(r"[^A-Za-z0-9._/-]", "_", name)


def parent_run_id() -> str | None:
    """The parent (pipeline) run of the open stage run, if any."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_run(run.info.run_id).data.tags.get("mlflow.parentRunId")


def experiment_parent(params: dict[str, Any], experiment: str) -> str | None:
    """The parent run of ``experiment`` in this invocation (the report logs each experiment's results there)."""
    if not enabled(params):
        return None
    return find_or_create_parent({**params, "experiment": experiment})
