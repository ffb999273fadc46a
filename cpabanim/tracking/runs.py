"""MLflow runs: one parent per experiment per pipeline invocation, one child per stage (docs/pipeline.md).

The CLI opens a stage's child run with :func:`stage_context` before the work starts; the stage logs into it with
the functions of :mod:`cpabanim.tracking`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpabanim import tracking
from cpabanim.tracking.provenance import (
    TAG_EXPERIMENT,
    TAG_HOST,
    TAG_PID,
    TAG_PIPELINE,
    TAG_ROLE,
    TAG_STAGE,
    flat_params,
    orchestrator_of,
    param_value,
    pipeline_id,
    run_tags,
)
from cpabanim.tracking.store import configure, creation_lock, enabled, tracking_uri

log = logging.getLogger(__name__)


def mlflow_client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _log_params(run_id: str, params: dict[str, Any]) -> None:
    import mlflow

    flat = flat_params(params)
    items = list(flat.items())
    for start in range(0, len(items), 100):
        mlflow_client().log_batch(run_id, params=[mlflow.entities.Param(k, v) for k, v in items[start : start + 100]])


def find_or_create_parent(params: dict[str, Any], experiment_id: str | None = None) -> str:
    """This invocation's parent run of ``params['experiment']``, created by the first stage that asks.

    A stage run by hand (no orchestrator, no ``CPABANIM_PIPELINE_RUN``) joins the newest parent of its
    experiment instead of starting a new one.
    """
    from cpabanim.config.layers import changed_from_defaults

    experiment_id = experiment_id or configure(params)
    name = str(params["experiment"])
    pid = pipeline_id()
    client = mlflow_client()
    where = f"tags.`{TAG_ROLE}` = 'pipeline' and tags.`{TAG_EXPERIMENT}` = '{name}'"
    if not pid.startswith("manual-"):
        where += f" and tags.`{TAG_PIPELINE}` = '{pid}'"
    with creation_lock(tracking_uri(params)):
        found = client.search_runs(
            [experiment_id], filter_string=where, order_by=["attributes.start_time DESC"], max_results=1
        )
        if found:
            return found[0].info.run_id
        orchestrator = orchestrator_of(pid)
        tags = {
            TAG_ROLE: "pipeline",
            TAG_PIPELINE: pid,
            "pipeline.orchestrator": orchestrator,
            **run_tags(params),
            **{
                f"param.{k}": param_value(v)
                for k, v in changed_from_defaults(params).items()
                if not k.startswith(("paths.", "tracking."))
            },
        }
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        _log_params(run.info.run_id, params)
        log.info("MLflow: parent run %s of experiment %s (%s)", run.info.run_id, name, orchestrator)
        return run.info.run_id


def _mark_killed(experiment_id: str, stage: str, experiment: str) -> None:
    """Runs of this stage left RUNNING by a process that no longer exists on this host are marked KILLED."""
    import socket

    client = mlflow_client()
    runs = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_STAGE}` = '{stage}' and tags.`{TAG_EXPERIMENT}` = '{experiment}'"
            " and attributes.status = 'RUNNING'"
        ),
    )
    for run in runs:
        tags = run.data.tags
        if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
            continue
        if not Path(f"/proc/{tags[TAG_PID]}").exists():
            client.set_terminated(run.info.run_id, "KILLED")
            log.info(
                "MLflow: run %s of stage %s was left running by a killed process: marked KILLED", run.info.run_id, stage
            )


@contextlib.contextmanager
def stage_context(stage: str, params: dict[str, Any], used: dict[str, Any]) -> Iterator[Any]:
    """The MLflow run of one stage, opened before the work by the CLI, as a child of its experiment's parent.

    ``used``: exactly the parameters the stage runs with (logged as the child's params). A stage that raises is
    recorded FAILED with the error as the ``error`` tag; the parent gets ``stage.<name>`` = finished/failed.
    With ``tracking.enabled: false`` this yields None and the ``log_*`` functions do nothing.
    """
    import socket

    import mlflow

    tracking.begin_stage()
    if not enabled(params):
        yield None
        return
    experiment_id = configure(params)
    parent_id = find_or_create_parent(params, experiment_id)
    _mark_killed(experiment_id, stage, str(params["experiment"]))
    tags = {
        TAG_ROLE: "stage",
        TAG_STAGE: stage,
        TAG_PIPELINE: pipeline_id(),
        TAG_PID: str(os.getpid()),
        TAG_HOST: socket.gethostname(),
        **run_tags(params),
    }
    run = mlflow.start_run(run_name=stage, parent_run_id=parent_id, tags=tags)
    client = mlflow_client()
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
