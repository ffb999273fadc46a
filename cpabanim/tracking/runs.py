"""MLflow runs: one parent per experiment per pipeline invocation, below it one run per seed, and one run per stage
(docs/pipeline.md): a per-experiment stage's run is a child of its seed's run; the shared stages' and the
report's are children of the experiment's parent.

The CLI opens a stage's child run with :func:`stage_context` before the work starts; the stage logs into it with
the functions of :mod:`cpabanim.tracking`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cpabanim import tracking
from cpabanim.tracking.provenance import (
    DIGEST_LENGTH,
    TAG_EXPERIMENT,
    TAG_HOST,
    TAG_PID,
    TAG_PIPELINE,
    TAG_ROLE,
    TAG_SEED,
    TAG_STAGE,
    flat_params,
    orchestrator_of,
    pipeline_id,
    processed_sha256,
    run_tags,
    source_tags,
)
from cpabanim.tracking.store import configure, creation_lock, enabled, find_or_create_run, find_run, tracking_uri

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


def _param_tags(values: Mapping[str, Any]) -> dict[str, str]:
    """``param.<key>`` for each value that differs from the built-in defaults (paths, tracking and the experiment's
    name aside): what makes the experiment what it is, searchable in the UI. ``values``: nested or dotted."""
    from cpabanim.config.schema import defaults

    base = flat_params(defaults())
    return {
        f"param.{k}": v
        for k, v in flat_params(values).items()
        if base.get(k) != v and k != "experiment" and not k.startswith(("paths.", "tracking."))
    }


def find_parent(experiment_id: str, experiment: str, pipeline: str | None) -> str | None:
    """The parent run of ``experiment`` in the invocation ``pipeline`` (the earliest of twins: :func:`find_run`),
    or the newest of any invocation (None)."""
    if pipeline is not None:
        return find_run(tracking_uri_now(), experiment_id, parent_identity(experiment, pipeline))
    where = f"tags.`{TAG_ROLE}` = 'pipeline' and tags.`{TAG_EXPERIMENT}` = '{experiment}'"
    found = mlflow_client().search_runs(
        [experiment_id], filter_string=where, order_by=["attributes.start_time DESC"], max_results=1
    )
    return found[0].info.run_id if found else None


def tracking_uri_now() -> str:
    """The store MLflow logs to in this process (set by :func:`~cpabanim.tracking.store.configure`)."""
    import mlflow

    return mlflow.get_tracking_uri()


def parent_identity(experiment: str, pipeline: str) -> dict[str, str]:
    """The tags that make a run the parent of ``experiment`` in the invocation ``pipeline``: one such run."""
    return {TAG_ROLE: "pipeline", TAG_EXPERIMENT: experiment, TAG_PIPELINE: pipeline}


def create_parent(experiment_id: str, params: dict[str, Any], logged: Mapping[str, Any], device: bool = True) -> str:
    """This invocation's parent run of ``params['experiment']``, created when it has none (race-safe across
    machines: :func:`~cpabanim.tracking.store.find_or_create_run`): provenance and source tags from ``params``
    (the invocation's environment; ``device``: whether the creating stage runs on a torch device, else the first
    stage that does tags it); its creator logs ``logged`` as its params and ``param.*`` tags (what the
    experiment ran with)."""
    name = str(params["experiment"])
    pid = pipeline_id()
    logged = {k: v for k, v in logged.items() if k != "seed"}  # its seeds' runs have one each (`seeds`: all)
    client = mlflow_client()

    def create() -> str:  # the tags (git, device) are worked out only when the parent is made
        tags = {
            TAG_ROLE: "pipeline",
            TAG_PIPELINE: pid,
            "pipeline.orchestrator": orchestrator_of(pid),
            **source_tags(pid),
            **run_tags(params, device),
            **_param_tags(logged),
        }
        return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id

    run_id, created = find_or_create_run(tracking_uri_now(), experiment_id, parent_identity(name, pid), create)
    if created:
        _log_params(run_id, dict(logged))
        log_processed_dataset(run_id, params)
        log.info("MLflow: parent run %s of experiment %s (%s)", run_id, name, orchestrator_of(pid))
    return run_id


def find_or_create_parent(params: dict[str, Any], experiment_id: str | None = None, device: bool = True) -> str:
    """This invocation's parent run of ``params['experiment']``, created by the first stage that asks.

    A stage run by hand (no orchestrator, no ``CPABANIM_PIPELINE_RUN``) joins the newest parent of its
    experiment instead of starting a new one (it never changes that parent's end time: :func:`update_parent`).
    """
    experiment_id = experiment_id or configure(params)
    pid = pipeline_id()
    with creation_lock(tracking_uri(params)):
        found = find_parent(experiment_id, str(params["experiment"]), None) if pid.startswith("manual-") else None
        return found or create_parent(experiment_id, params, params, device)


def find_or_create_seed_run(parent_id: str, params: dict[str, Any], experiment_id: str) -> str:
    """The run of ``params['seed']`` below the experiment's parent ``parent_id``, created by the first
    per-experiment stage of that seed (race-safe: :func:`~cpabanim.tracking.store.find_or_create_run`): the
    seed's stage runs are its children, the report logs its metrics."""
    seed = str(params["seed"])
    identity = {TAG_ROLE: "seed", TAG_SEED: seed, "mlflow.parentRunId": parent_id}
    tags = {**identity, TAG_EXPERIMENT: str(params["experiment"]), TAG_PIPELINE: pipeline_id()}
    client = mlflow_client()

    def create() -> str:
        return client.create_run(experiment_id, run_name=f"{params['experiment']} seed {seed}", tags=tags).info.run_id

    with creation_lock(tracking_uri(params)):
        run_id, created = find_or_create_run(tracking_uri_now(), experiment_id, identity, create)
    if created:
        client.log_param(run_id, "seed", seed)
    return run_id


def log_processed_dataset(run_id: str, params: dict[str, Any], only_if_none: bool = False) -> None:
    """The processed data as the run's dataset input (context ``training``), its digest the data's hash
    (:func:`cpabanim.tracking.provenance.processed_sha256`, cut to MLflow's digest length), once per digest;
    nothing before preprocess has run. ``only_if_none``: only when the run has no dataset input yet."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    processed = Path(params["paths"]["processed"]).resolve()
    digest = processed_sha256(processed)
    if digest is None:
        return
    client = mlflow_client()
    logged = [d.dataset.digest for d in client.get_run(run_id).inputs.dataset_inputs]
    if digest[:DIGEST_LENGTH] in logged or (only_if_none and logged):
        return
    with warnings.catch_warnings():  # MLflow registers the local-file source twice and warns that it picked one
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(processed))
    name = f"{params['data']['source'] or 'frames'}-processed"
    dataset = MetaDataset(source, name=name, digest=digest[:DIGEST_LENGTH])
    context = InputTag(key=MLFLOW_DATASET_CONTEXT, value="training")
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[context])])


def of_this_invocation(run_id: str) -> bool:
    """Whether run ``run_id`` was created by this pipeline invocation (its ``cpabanim.pipeline_id`` tag)."""
    return mlflow_client().get_run(run_id).data.tags.get(TAG_PIPELINE) == pipeline_id()


def update_parent(parent_id: str, params: dict[str, Any], status: str, device: bool = True) -> None:
    """After a stage: a parent of this invocation gets the provenance of data that now exists (it did not when
    the parent was made), the processed dataset and ``status`` with its end time. A parent of an earlier
    invocation, joined by a stage run by hand, keeps its status, end time and tags (the invocation it records
    ended then): it only receives the tags and the dataset it lacks."""
    client = mlflow_client()
    ours = of_this_invocation(parent_id)
    recorded = client.get_run(parent_id).data.tags
    for key, value in run_tags(params, device).items():
        if ours or key not in recorded:
            client.set_tag(parent_id, key, value)
    log_processed_dataset(parent_id, params, only_if_none=not ours)
    if ours:
        client.set_terminated(parent_id, status)


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
def stage_context(
    stage: str, params: dict[str, Any], used: dict[str, Any], seeded: bool = False, device: bool = True
) -> Iterator[Any]:
    """The MLflow run of one stage, opened before the work by the CLI, as a child of its experiment's parent or,
    ``seeded`` (a per-experiment stage), of the run of its seed below that parent.

    ``used``: exactly the parameters the stage runs with (logged as the child's params). ``device``: whether the
    stage may run on a torch device (its declaration asks for GPUs under some parameters): only then is the run,
    and its parent, tagged with the device. A stage that raises is
    recorded FAILED with the error as the ``error`` tag; the parent gets ``stage.<name>`` = finished/failed.
    With ``tracking.enabled: false`` this yields None and the ``log_*`` functions do nothing.
    """
    tracking.begin_stage()
    if not enabled(params):  # before importing MLflow: its import alone is about 4 s of a stage's start-up
        yield None
        return
    import socket

    import mlflow

    experiment_id = configure(params)
    parent_id = find_or_create_parent(params, experiment_id, device)
    seed_run = find_or_create_seed_run(parent_id, params, experiment_id) if seeded else None
    _mark_killed(experiment_id, stage, str(params["experiment"]))
    tags = {
        TAG_ROLE: "stage",
        TAG_STAGE: stage,
        TAG_PIPELINE: pipeline_id(),
        TAG_PID: str(os.getpid()),
        TAG_HOST: socket.gethostname(),
        **run_tags(params, device),
        **({TAG_SEED: str(params["seed"])} if seeded else {}),
    }
    run = mlflow.start_run(run_name=stage, parent_run_id=seed_run or parent_id, tags=tags)
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
            client.set_tag(parent_id, f"stage.{stage}", status.lower())
            ended = "FAILED" if status != "FINISHED" else "FINISHED"
            if seed_run is not None and of_this_invocation(seed_run):
                client.set_terminated(seed_run, ended)
            update_parent(parent_id, params, ended, device)


def parent_run_id() -> str | None:
    """The parent (pipeline) run of the open stage run, if any."""
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    return mlflow.get_run(run.info.run_id).data.tags.get("mlflow.parentRunId")


def experiment_parent(params: dict[str, Any], experiment: str, recorded: Mapping[str, Any] | None = None) -> str | None:
    """The parent run that receives ``experiment``'s results from the report (None: tracking is off).

    ``params``' own experiment: the report's own parent. Another experiment: its parent in this invocation; else
    its newest parent (the earlier invocation that made the results being reported: joined, never re-opened or
    ended); else a new parent of this invocation whose params are ``recorded`` (what the experiment's runs
    recorded), never ``params``' values, which are another experiment's.
    """
    if not enabled(params):
        return None
    if experiment == params["experiment"]:
        return find_or_create_parent(params, device=False)  # the report runs on no device
    experiment_id = configure(params)
    with creation_lock(tracking_uri(params)):
        found = find_parent(experiment_id, experiment, pipeline_id()) or find_parent(experiment_id, experiment, None)
        return found or create_parent(experiment_id, {**params, "experiment": experiment}, recorded or {}, False)


def experiment_seed_run(params: dict[str, Any], parent_id: str | None, experiment: str, seed: int) -> str | None:
    """The run of ``experiment``'s ``seed`` below its parent ``parent_id`` that receives the seed's results from
    the report (None: tracking is off); created when none is there (its stages ran in another invocation)."""
    if parent_id is None or not enabled(params):
        return None
    return find_or_create_seed_run(parent_id, {**params, "experiment": experiment, "seed": seed}, configure(params))


def end_parent_created_by_report(parent_id: str) -> None:
    """A parent the report created (its experiment ran no stage in this invocation) would stay RUNNING with no
    end time: end it. The report's own parent is ended by its stage context; another invocation's is never
    touched (ending it again would stretch its duration to now)."""
    client = mlflow_client()
    if parent_id == parent_run_id() or client.get_run(parent_id).info.status != "RUNNING":
        return
    if of_this_invocation(parent_id):
        client.set_terminated(parent_id, "FINISHED")
