"""The whole pipeline on a tiny configuration, through `snakemake --cores all` AND `dvc repro`.

Each tool runs in its own throw-away git repository (the project's Snakefile, workflow/, dvc.yaml, params.yaml
and presets, with the installed package). The two full runs start together (they are mostly single-threaded
and independent), then each test checks one property: outputs and MLflow runs, same metrics from both tools
(deterministic seeds), a no-op re-run, and a one-parameter change that re-runs only the stages downstream of it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cpabanim.config import deep_merge

from .conftest import BIN, copy_project, run, tool_env

pytestmark = pytest.mark.slow

# Really tiny: a handful of 32 px frames and three training steps; every stage still runs for real.
TINY = {
    "data": {"frame_size": 32, "synthetic": {"num_train": 4, "num_test": 2, "num_frames": 6}},
    "train": {"max_steps": 3, "batch_size": 2, "checkpoint_every": 2, "log_every": 1,
              "image_every": 0},
    "reconstruct": {"max_frames": 4},
    "animate": {"num_pairs": 1, "modes": ["relative"]},
}
STAGES_WITH_RUNS = {"preprocess", "masks", "train", "reconstruct", "animate", "evaluate", "report"}
DOWNSTREAM_OF_ANIMATE = {"animate", "evaluate", "report"}


def set_params(root: Path, values: dict) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(params, values), sort_keys=False))


def commit(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", message], root)


def start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, what: str, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{out[-8000:]}"
    return out


SNAKEMAKE = [str(BIN / "snakemake"), "--cores", "all"]
DVC_REPRO = [str(BIN / "dvc"), "repro"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both tools' full runs of the same tiny parameters, each in its own repository, started together."""
    roots = {}
    for tool in ("snakemake", "dvc"):
        root = copy_project(tmp_path_factory.mktemp(tool) / "project")
        set_params(root, TINY)
        commit(root, "tiny parameters")
        roots[tool] = root
    started = time.monotonic()
    procs = {"snakemake": start(SNAKEMAKE, roots["snakemake"]), "dvc": start(DVC_REPRO, roots["dvc"])}
    logs = {tool: finish(proc, tool) for tool, proc in procs.items()}
    sys.stderr.write(f"full runs of both tools: {time.monotonic() - started:.0f} s\n")
    return roots, logs


def mlflow_runs(root: Path) -> list:
    """Every run of the project's experiment, read in a subprocess (MLflow keeps global state)."""
    script = (
        "import json, mlflow\n"
        "mlflow.set_tracking_uri('sqlite:///mlflow.db')\n"
        "runs = mlflow.search_runs(experiment_names=['cpabanim'], output_format='list')\n"
        "print(json.dumps([dict(name=r.info.run_name, id=r.info.run_id, status=r.info.status,\n"
        "    params=r.data.params, metrics=r.data.metrics, tags=r.data.tags) for r in runs]))\n"
    )
    return json.loads(run([sys.executable, "-c", script], root).stdout)


def check_outputs_and_tracking(root: Path, orchestrator: str) -> dict:
    metrics = json.loads((root / "outputs" / "metrics.json").read_text())
    assert {"recon/l1", "recon/psnr", "recon/ssim"} <= set(metrics)
    assert all(isinstance(v, float | int) for v in metrics.values())
    assert (root / "models" / "checkpoints" / "last.pt").is_file()
    for name in ("runs.md", "runs.csv", "metrics.png", "samples.png", "train_loss.csv"):
        assert (root / "outputs" / "report" / name).stat().st_size > 0, name
    assert len((root / "outputs" / "report" / "train_loss.csv").read_text().splitlines()) == 1 + TINY["train"]["max_steps"]

    runs = mlflow_runs(root)
    parents = [r for r in runs if r["tags"].get("cpabanim.role") == "pipeline"]
    assert len(parents) == 1, "one parent run per pipeline invocation"
    parent = parents[0]
    children = [r for r in runs if r["tags"].get("mlflow.parentRunId") == parent["id"]]
    assert {r["tags"]["cpabanim.stage"] for r in children} >= STAGES_WITH_RUNS
    assert all(r["status"] == "FINISHED" for r in [parent, *children])
    head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    tags = parent["tags"]
    assert tags["pipeline.orchestrator"] == orchestrator
    assert tags["git.commit"] == head and tags["git.dirty"] == "false"
    assert tags["device"] == "cpu" and tags["data.clips.train"] == "4" and tags["data.clips.test"] == "2"
    assert parent["params"]["train.max_steps"] == "3" and parent["params"]["data.source"] == "synthetic"
    for key, value in metrics.items():
        assert parent["metrics"][key] == pytest.approx(value), key
    train = next(r for r in children if r["tags"]["cpabanim.stage"] == "train")
    assert "loss/total" in train["metrics"]
    table = (root / "outputs" / "report" / "runs.md").read_text()
    assert parent["name"] in table and "recon/l1" in table
    return parent


def test_snakemake_runs_the_whole_pipeline(runs):
    roots, logs = runs
    check_outputs_and_tracking(roots["snakemake"], "snakemake")


def test_dvc_runs_the_whole_pipeline(runs):
    roots, logs = runs
    root = roots["dvc"]
    parent = check_outputs_and_tracking(root, "dvc")
    # data and model versions from dvc.lock are on the parent run
    assert any(key.startswith("dvc.preprocess.") for key in parent["tags"]), parent["tags"]
    shown = json.loads(run([str(BIN / "dvc"), "metrics", "show", "--json"], root).stdout)
    assert "recon/l1" in json.dumps(shown)
    # as a user would: commit the pipeline's state (dvc.lock, the git-tracked metrics) for `dvc metrics diff`
    run(["git", "add", "dvc.lock", "outputs/metrics.json"], root)
    run(["git", "commit", "-q", "-m", "tiny run"], root)


def test_same_params_same_data_same_code_same_metrics(runs):
    roots, _ = runs
    metrics = {tool: json.loads((root / "outputs" / "metrics.json").read_text()) for tool, root in roots.items()}
    assert metrics["snakemake"] == metrics["dvc"]


def test_nothing_changed_is_a_no_op(runs):
    roots, _ = runs
    out = run(SNAKEMAKE, roots["snakemake"]).stdout + run(SNAKEMAKE, roots["snakemake"]).stderr
    assert "Nothing to be done" in out
    out = run(DVC_REPRO, roots["dvc"]).stdout
    assert "Running stage" not in out and "up to date" in out


def test_one_param_reruns_only_the_stages_that_depend_on_it(runs):
    roots, _ = runs
    for root in roots.values():
        set_params(root, {"animate": {"num_pairs": 2}})
    procs = {"snakemake": start(SNAKEMAKE, roots["snakemake"]), "dvc": start(DVC_REPRO, roots["dvc"])}
    logs = {tool: finish(proc, tool) for tool, proc in procs.items()}
    ran_snakemake = set(re.findall(r"^\s*(?:local)?rule (\w+):", logs["snakemake"], re.M)) - {"all"}
    ran_dvc = set(re.findall(r"Running stage '(\w+)'", logs["dvc"]))
    assert ran_snakemake == DOWNSTREAM_OF_ANIMATE, logs["snakemake"][-3000:]
    assert ran_dvc == DOWNSTREAM_OF_ANIMATE, logs["dvc"][-3000:]
    # `dvc metrics diff` compares the workspace with the last commit
    diff = json.loads(run([str(BIN / "dvc"), "metrics", "diff", "--json"], roots["dvc"]).stdout)
    changed = {key for entry in diff.values() for key in entry}
    assert changed and all(key.startswith("anim/") for key in changed), diff
