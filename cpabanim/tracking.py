"""MLflow tracking, through one small module: every stage logs with these functions and nothing else.

A pipeline invocation has one parent run; each stage is a child run of it (see :func:`stage_run`).
The tracking URI comes from ``params['tracking']['uri']`` (``sqlite:///mlflow.db`` by default), or from
``MLFLOW_TRACKING_URI`` when set, so a remote server is one environment variable away.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cpabanim.config import flatten


def configure(params: dict[str, Any]) -> None:
    """Point MLflow at the configured tracking server and experiment."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI") or params["tracking"]["uri"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(params["tracking"]["experiment"])


@contextlib.contextmanager
def stage_run(stage: str, params: dict[str, Any], tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Open the MLflow run of one stage, with the flattened params logged and ``stage`` tagged."""
    import mlflow

    configure(params)
    with mlflow.start_run(run_name=stage, tags={"cpabanim.stage": stage, **(tags or {})}) as run:
        mlflow.log_params({k: _param_value(v) for k, v in flatten(params).items()})
        yield run


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_image(image, name: str) -> None:
    """Log an (H, W, 3) uint8 array as an image artifact (e.g. ``grids/step_000100.png``)."""
    import mlflow

    mlflow.log_image(image, artifact_file=name)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)
