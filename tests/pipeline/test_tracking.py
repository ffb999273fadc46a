"""cpabanim.tracking: which invocation a stage belongs to, parent/child runs, and tracking switched off."""

from __future__ import annotations

import pytest

from cpabanim import tracking
from cpabanim.config import load_params

from ..conftest import PROJECT_ROOT


@pytest.mark.parametrize(
    ("argv", "tool"),
    [
        (["/venv/bin/python3.11", "/venv/bin/dvc", "repro"], "dvc"),
        (["/venv/bin/snakemake", "--cores", "all"], "snakemake"),
        (["python", "-m", "snakemake", "-n"], "snakemake"),
        (["/bin/sh", "-c", "cpabanim train"], None),
        (["python", "/x/dvc_helper.py"], None),
    ],
)
def test_orchestrator_is_recognised_from_its_command_line(argv, tool):
    assert tracking._orchestrator_of(argv) == tool


def test_pipeline_id_prefers_the_environment(monkeypatch):
    monkeypatch.setenv(tracking.PIPELINE_RUN_ENV, "snakemake-123-456")
    assert tracking.pipeline_id() == "snakemake-123-456"
    assert tracking.orchestrator_of("snakemake-123-456") == "snakemake"
    monkeypatch.delenv(tracking.PIPELINE_RUN_ENV)
    # under pytest there is no orchestrator above us: the process is its own (stable) pipeline
    assert tracking.pipeline_id() == tracking.pipeline_id()


def test_stages_of_one_invocation_share_one_parent(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    # absolute: MLflow caches stores by URI, and other tests use the relative default in other folders
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv(tracking.PIPELINE_RUN_ENV, "custom-run")
    params = load_params(PROJECT_ROOT / "params.yaml")
    parents = []
    for stage in ("train", "evaluate"):
        with tracking.stage_run(stage, params) as run:
            tracking.log_metrics({"x": 1.0}, step=1)
            parents.append(tracking.parent_run_id())
        assert run.info.run_name == stage
    assert parents[0] == parents[1] is not None
    parent = mlflow.get_run(parents[0])
    assert parent.data.tags[tracking.TAG_ROLE] == "pipeline" and parent.info.status == "FINISHED"
    assert parent.data.tags["stage.evaluate"] == "finished" and parent.data.params["seed"] == "0"


def test_tracking_disabled_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(PROJECT_ROOT / "params.yaml", overrides=["tracking.enabled=false"])
    with tracking.stage_run("train", params) as run:
        assert run is None
        tracking.log_metrics({"x": 1.0})
        tracking.log_artifact(PROJECT_ROOT / "params.yaml")
    assert not (tmp_path / "mlflow.db").exists()
