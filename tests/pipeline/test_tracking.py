"""cpabanim.tracking: which invocation a stage belongs to, parent/child runs, and tracking switched off."""

from __future__ import annotations

import pytest

from cpabanim import tracking
from cpabanim.config.layers import load_params
from cpabanim.tracking import provenance, runs

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
    assert provenance._orchestrator_of(argv) == tool


def test_pipeline_id_prefers_the_environment(monkeypatch):
    monkeypatch.setenv(provenance.PIPELINE_RUN_ENV, "snakemake-123-456")
    assert provenance.pipeline_id() == "snakemake-123-456"
    assert provenance.orchestrator_of("snakemake-123-456") == "snakemake"
    monkeypatch.delenv(provenance.PIPELINE_RUN_ENV)
    # under pytest there is no orchestrator above us: the process is its own (stable) pipeline
    assert provenance.pipeline_id() == provenance.pipeline_id()


def tracked(tmp_path, monkeypatch, pipeline: str | None = "custom-run", **overrides) -> dict:
    """Params with an absolute sqlite store in ``tmp_path`` (MLflow caches stores by URI)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    if pipeline:
        monkeypatch.setenv(provenance.PIPELINE_RUN_ENV, pipeline)
    else:
        monkeypatch.delenv(provenance.PIPELINE_RUN_ENV, raising=False)
    return load_params(PROJECT_ROOT / "params.yaml", overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_stages_of_one_invocation_share_one_parent_per_experiment(tmp_path, monkeypatch):
    import mlflow

    params = tracked(tmp_path, monkeypatch)
    parents = []
    for stage in ("train", "evaluate"):
        with runs.stage_context(stage, params, used={"seed": 0}) as run:
            tracking.log_metrics({"x": 1.0}, step=1)
            parents.append(runs.parent_run_id())
        assert run.info.run_name == stage
        assert mlflow.get_run(run.info.run_id).data.params == {"seed": "0"}  # exactly what the stage used
    assert parents[0] == parents[1] is not None
    parent = mlflow.get_run(parents[0])
    assert parent.info.run_name == "default" and parent.info.status == "FINISHED"
    assert parent.data.tags[provenance.TAG_ROLE] == "pipeline" and parent.data.tags["stage.evaluate"] == "finished"
    other = {**params, "experiment": "tps"}
    with runs.stage_context("train", other, used={}):
        assert runs.parent_run_id() != parents[0]
        assert mlflow.get_run(runs.parent_run_id()).info.run_name == "tps"


def test_a_stage_on_no_device_is_not_tagged_with_one_and_the_parent_gets_the_first_device_stages(tmp_path, monkeypatch):
    """download and preprocess ask for no GPU: their runs carry no ``device`` tag (their jobs need not import torch
    to work one out); the parent they create gets it from the first stage that may use a device."""
    import mlflow

    params = tracked(tmp_path, monkeypatch)
    with runs.stage_context("preprocess", params, used={}, device=False) as run:
        parent = runs.parent_run_id()
    assert "device" not in mlflow.get_run(run.info.run_id).data.tags
    assert "device" not in mlflow.get_run(parent).data.tags and mlflow.get_run(parent).data.tags["preset"] == "default"
    with runs.stage_context("train", params, used={}) as run:
        assert runs.parent_run_id() == parent
    assert mlflow.get_run(run.info.run_id).data.tags["device"] == "cpu"
    assert mlflow.get_run(parent).data.tags["device"] == "cpu"


def test_a_stage_that_raises_leaves_a_failed_run_with_its_error(tmp_path, monkeypatch):
    import mlflow

    params = tracked(tmp_path, monkeypatch)
    with pytest.raises(RuntimeError):
        with runs.stage_context("train", params, used={}) as run:
            raise RuntimeError("disk on fire")
    failed = mlflow.get_run(run.info.run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["error"] == "RuntimeError: disk on fire"
    parent = mlflow.get_run(failed.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED" and parent.data.tags["stage.train"] == "failed"


def test_stages_run_by_hand_join_their_experiments_latest_parent(tmp_path, monkeypatch):
    params = tracked(tmp_path, monkeypatch, pipeline=None)
    ids = set()
    for stage in ("reconstruct", "evaluate"):
        with runs.stage_context(stage, params, used={}):
            ids.add(runs.parent_run_id())
    assert len(ids) == 1


def test_runs_left_running_by_a_killed_process_are_marked_killed(tmp_path, monkeypatch):
    import mlflow

    params = tracked(tmp_path, monkeypatch)
    with runs.stage_context("train", params, used={}) as run:
        pass
    client = mlflow.MlflowClient()
    client.update_run(run.info.run_id, status="RUNNING")
    client.set_tag(run.info.run_id, provenance.TAG_PID, "999999999")  # no such process
    with runs.stage_context("train", params, used={}):
        pass
    assert client.get_run(run.info.run_id).info.status == "KILLED"


def test_a_failing_store_degrades_tracking_instead_of_killing_the_stage(tmp_path, monkeypatch):
    import mlflow

    params = tracked(tmp_path, monkeypatch)
    with runs.stage_context("train", params, used={}) as run:

        def broken(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(mlflow, "log_metrics", broken)
        tracking.log_metrics({"x": 1.0}, step=1)  # does not raise
        tracking.log_metrics({"x": 2.0}, step=2)
    assert "tracking.degraded" in mlflow.get_run(run.info.run_id).data.tags
    monkeypatch.undo()  # the store works again: the next stage tracks normally
    params = tracked(tmp_path, monkeypatch)
    with runs.stage_context("evaluate", params, used={}) as run:
        tracking.log_metrics({"x": 3.0})
    assert mlflow.get_run(run.info.run_id).data.metrics == {"x": 3.0}


def test_two_processes_cold_starting_one_sqlite_store_both_succeed(tmp_path):
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from cpabanim import tracking\n"
        "from cpabanim.config.layers import load_params\n"
        "from cpabanim.tracking import runs\n"
        f"params = load_params({str(PROJECT_ROOT / 'params.yaml')!r})\n"
        "with runs.stage_context('train', params, used={}):\n"
        "    tracking.log_metrics({'x': 1.0})\n"
    )
    env = {
        **__import__("os").environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/shared.db",
        "CPABANIM_PIPELINE_RUN": "race",
    }
    folders = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for folder in folders:
        folder.mkdir()
        procs.append(
            subprocess.Popen([sys.executable, "-c", script], cwd=folder, env=env, stderr=subprocess.PIPE, text=True)
        )
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    assert (tmp_path / "shared.db.lock").exists()  # the lock lives next to the store, not in the working folder


def test_tracking_disabled_logs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(PROJECT_ROOT / "params.yaml", overrides=["tracking.enabled=false"])
    with runs.stage_context("train", params, used={}) as run:
        assert run is None
        tracking.log_metrics({"x": 1.0})
        tracking.log_artifact(PROJECT_ROOT / "params.yaml")
    assert not (tmp_path / "mlflow.db").exists()


def test_artifact_names_are_safe_for_the_mlflow_ui():
    assert (
        tracking.safe_artifact_name("animation/000_a#1_to_b#2/relative.gif") == "animation/000_a_1_to_b_2/relative.gif"
    )


def test_parents_carry_source_user_and_git_commit(tmp_path, monkeypatch):
    import subprocess

    params = tracked(tmp_path, monkeypatch)
    monkeypatch.chdir(PROJECT_ROOT)  # a git work tree
    tags = provenance.source_tags("snakemake-1-2")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.source.name"] == "snakemake"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    monkeypatch.chdir(tmp_path)
    with runs.stage_context("train", params, used={}):
        parent = runs.mlflow_client().get_run(runs.parent_run_id())
    assert parent.data.tags["mlflow.source.type"] == "LOCAL" and "mlflow.user" in parent.data.tags


def test_a_stage_run_by_hand_keeps_an_earlier_parents_end_time(tmp_path, monkeypatch):
    params = tracked(tmp_path, monkeypatch, pipeline="snakemake-1-2")
    with runs.stage_context("train", params, used={}):
        parent = runs.parent_run_id()
    client = runs.mlflow_client()
    ended = client.get_run(parent).info
    monkeypatch.delenv(provenance.PIPELINE_RUN_ENV)  # later, by hand: joins that parent
    with runs.stage_context("evaluate", params, used={}):
        assert runs.parent_run_id() == parent
    later = client.get_run(parent)
    assert (later.info.end_time, later.info.status) == (ended.end_time, ended.status)
    assert later.data.tags["stage.evaluate"] == "finished"
