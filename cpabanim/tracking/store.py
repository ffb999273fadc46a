"""Which MLflow store the stages log to, that it answers, and the race-safe creation of runs in it (docs/pipeline.md,
"Tracking", "A shared tracking server").

The tracking URI comes from ``params['tracking']['uri']`` (``sqlite:///mlflow.db`` by default), or from
``MLFLOW_TRACKING_URI`` when set, so a shared server (``cpabanim tracking-server``) is one environment variable
away. Before any work, :func:`configure` checks once per process that the store answers (a server's ``/health``, a
sqlite file's schema) and fails in one line naming the store and the fix, instead of MLflow's minutes of retries or
an SQLAlchemy traceback.

Concurrent jobs: with sqlite, the first connection creates the schema and concurrent first connections race on the
migration, so every connection that may create something is serialised by a lock file next to the database. Jobs
on several machines share a server but no lock file: :func:`find_or_create_run` creates, waits until concurrent
creations are visible, and keeps the earliest of the runs with the same identifying tags; the others are deleted
by the jobs that made them, so that every job uses the same run.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cpabanim.errors import ConfigError

log = logging.getLogger(__name__)

# mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ itself: remember what we set, so that only
# a value the user set overrides params (otherwise the first URI used would stick for the whole process).
_SET_BY_US: set[str] = set()
_CHECKED: set[str] = set()  # stores that answered check_store in this process

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# How long a server may take before the stage refuses to start: to accept the connection (a host that is down or
# firewalled), then to answer /health (a server busy with a study's jobs answers late, but answers).
CHECK_TIMEOUT_S = (5.0, 30.0)
# How long a job that created a run waits before it looks for twins made by jobs on other machines: longer than
# one create request takes, so that every twin is visible to every job when it picks the earliest.
SETTLE_S = 1.0
DISABLE_HINT = "unset MLFLOW_TRACKING_URI / set tracking.enabled: false"


def enabled(params: dict[str, Any]) -> bool:
    return bool(params["tracking"]["enabled"])


def check_uri(uri: str) -> None:
    """Refuse, before any work, the stores MLflow 3 would only reject after the stage ran (file stores)."""
    if uri.startswith("file:") or "://" not in uri:
        raise ConfigError(
            f"tracking URI {uri!r}: MLflow's file store is not supported; use sqlite:///mlflow.db "
            "or an http(s):// server (set tracking.uri or MLFLOW_TRACKING_URI)"
        )


SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, None for any other URI."""
    return Path(uri[len(SQLITE_PREFIX) :]) if uri.startswith(SQLITE_PREFIX) else None


def masked(uri: str) -> str:
    """``uri`` with its password replaced by ``***``: what messages and logs may show of a store's address."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def tracking_uri(params: dict[str, Any]) -> str:
    """The user's MLFLOW_TRACKING_URI if set, else params' ``tracking.uri``; relative sqlite paths made absolute
    (MLflow caches stores by URI: ``sqlite:///mlflow.db`` from two working directories would share one store)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = env if env and env not in _SET_BY_US else params["tracking"]["uri"]
    database = sqlite_path(uri)
    if database is not None and not database.is_absolute():
        uri = SQLITE_PREFIX + str(database.resolve())
    return uri


def check_server(uri: str, timeout: float | tuple[float, float] = CHECK_TIMEOUT_S) -> None:
    """A GET of the server's ``/health`` within ``timeout`` (connect, answer): MLflow's client would retry for
    minutes. Any HTTP answer but a 5xx (a proxy whose server is down) counts as reachable; MLflow reports the rest
    itself."""
    import requests

    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true")
    verify: bool | str = False if insecure else os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    fix = f"start it (cpabanim tracking-server ...) or {DISABLE_HINT}"
    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout, verify=verify)
    except requests.exceptions.Timeout:
        seconds = sum(timeout) if isinstance(timeout, tuple) else timeout
        raise ConfigError(f"tracking server {masked(uri)} did not answer within {seconds:.0f} s: {fix}") from None
    except requests.exceptions.ConnectionError as err:
        why = "connection refused" if "refused" in str(err).lower() else "cannot connect"
        raise ConfigError(f"tracking server {masked(uri)} is not reachable ({why}): {fix}") from None
    if answer.status_code >= 500:
        raise ConfigError(f"tracking server {masked(uri)} answered HTTP {answer.status_code} to /health: {fix}")


def check_sqlite(database: Path) -> None:
    """Read the schema of an existing sqlite store: a file cut short or overwritten would otherwise surface as an
    SQLAlchemy traceback from the first stage. A missing or empty file is a fresh store; a busy one is fine."""
    import sqlite3

    if not database.is_file() or database.stat().st_size == 0:
        return
    fix = "move it away to start a fresh store (or restore it from a backup)"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
            db.execute("SELECT name, sql FROM sqlite_master").fetchall()
    except sqlite3.OperationalError as err:
        if "locked" in str(err):  # another job is writing: the store is alive
            return
        raise ConfigError(f"tracking store {database} cannot be read ({err}): {fix}") from None
    except sqlite3.DatabaseError as err:
        if "not a database" in str(err):
            raise ConfigError(f"{database} is not an SQLite database (corrupt?): {fix}") from None
        raise ConfigError(f"tracking store {database} is corrupt ({err}; cut short?): {fix}") from None


def check_store(uri: str) -> None:
    """Fail in one line, before any work, when the store does not answer; once per process and store."""
    if uri in _CHECKED:
        return
    database = sqlite_path(uri)
    if database is not None:
        check_sqlite(database)
    elif uri.startswith(("http://", "https://")):
        check_server(uri)
    _CHECKED.add(uri)


def lock_path(uri: str) -> Path:
    """The lock of a tracking store: next to a sqlite file (shared by every checkout that uses it), else one per
    URI in the temp folder (parent-run creation by parallel jobs on one machine; across machines:
    :func:`find_or_create_run`)."""
    database = sqlite_path(uri)
    if database is not None:
        return database.with_name(database.name + ".lock")
    import hashlib
    import tempfile

    return Path(tempfile.gettempdir()) / f"cpabanim-tracking-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def creation_lock(uri: str) -> Iterator[None]:
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
    with creation_lock(uri):
        check_store(uri)
        if uri != os.environ.get("MLFLOW_TRACKING_URI"):  # the user's own variable stays the user's
            _SET_BY_US.add(uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(params["tracking"]["experiment"])
        # MLflow 3 does not make it the active experiment when a job elsewhere created it at the same moment
        # (its RESOURCE_ALREADY_EXISTS path): the stage run would land in the Default experiment
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            label_experiment(experiment.experiment_id)
    return experiment.experiment_id


def label_experiment(experiment_id: str) -> None:
    """Label the experiment "Machine learning" in MLflow 3's UI (the layout the UI opens is the browser's choice,
    which the page `cpabanim ui` prints asks for). Jobs on other machines may set it at the same moment: the
    database then refuses the second insert, and the label is there."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    except MlflowException:
        if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
            raise


def settle_seconds(uri: str) -> float:
    """How long creators wait for twins: none with sqlite, whose lock file already serialises every creator."""
    return 0.0 if sqlite_path(uri) is not None else SETTLE_S


def active_runs(uri: str, experiment_id: str, identity: Mapping[str, str]) -> list[Any]:
    """The active (not deleted) runs of ``experiment_id`` whose tags include all of ``identity``."""
    from mlflow import MlflowClient

    where = " and ".join(f"tags.`{key}` = '{value}'" for key, value in identity.items())
    return MlflowClient(tracking_uri=uri).search_runs([experiment_id], filter_string=where)


def earliest(found: list[Any]) -> Any:
    """The run every job keeps among twins: the earliest start, then the smallest id (the same for all jobs that
    see the same runs, whatever their order or the machine)."""
    return min(found, key=lambda run: (run.info.start_time, run.info.run_id))


def find_run(uri: str, experiment_id: str, identity: Mapping[str, str]) -> str | None:
    """The run with tags ``identity`` (the earliest of twins), None when there is none. One younger than the
    settle time may still get an earlier twin from a slower job: wait that long, then look again."""
    found = active_runs(uri, experiment_id, identity)
    if not found:
        return None
    best = earliest(found)
    age = time.time() - best.info.start_time / 1000
    settle = settle_seconds(uri)
    if age < settle:
        time.sleep(min(settle - age, settle))
        best = earliest(active_runs(uri, experiment_id, identity) or found)
    return best.info.run_id


def find_or_create_run(
    uri: str, experiment_id: str, identity: Mapping[str, str], create: Callable[[], str]
) -> tuple[str, bool]:
    """The run with tags ``identity``, made by ``create()`` (which must set them) when there is none; whether
    this job made it (then it logs the run's params). Race-safe without a shared lock: jobs that create at once
    all wait :data:`SETTLE_S`, see every twin, keep the same one (:func:`earliest`) and delete their own others."""
    found = find_run(uri, experiment_id, identity)
    if found is not None:
        return found, False
    mine = create()
    time.sleep(settle_seconds(uri))
    twins = active_runs(uri, experiment_id, identity)
    best = earliest(twins).info.run_id if twins else mine
    if best == mine:
        return mine, True
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).delete_run(mine)
    log.info("MLflow: run %s had a twin made at the same time by another job: deleted, using %s", mine, best)
    return best, False
