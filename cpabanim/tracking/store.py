"""Which MLflow store the stages log to, and its safe creation (docs/pipeline.md, "Tracking").

The tracking URI comes from ``params['tracking']['uri']`` (``sqlite:///mlflow.db`` by default), or from
``MLFLOW_TRACKING_URI`` when set, so a remote server is one environment variable away. With sqlite, the first
connection creates the schema: concurrent first connections race on the migration, so every connection that
may create something (database, experiment, parent run) is serialised by a lock file in ``.cpabanim/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpabanim.errors import ConfigError

log = logging.getLogger(__name__)

# mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ itself: remember what we set, so that only
# a value the user set overrides params (otherwise the first URI used would stick for the whole process).
_SET_BY_US: set[str] = set()


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"


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
        if uri != os.environ.get("MLFLOW_TRACKING_URI"):  # the user's own variable stays the user's
            _SET_BY_US.add(uri)
        mlflow.set_tracking_uri(uri)
        experiment = mlflow.set_experiment(params["tracking"]["experiment"])
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            # labels the experiment "Machine learning" in MLflow 3's UI; the layout the UI opens is the browser's
            # choice, which the page `cpabanim ui` prints asks for
            mlflow.MlflowClient().set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, "custom_model_development"
            )
    return experiment.experiment_id
