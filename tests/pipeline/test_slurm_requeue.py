"""Training across SLURM allocations (issue 22): the time-limit warning, a checkpoint, a requeue, a resume.

The train stage runs through `snakemake --profile workflow/profiles/slurm-local` on the one-node cluster of
tests/services/slurm.py, submitted as the cluster profile asks (``--signal=URG@<s> --requeue``, docs/model.md
"Preemption"). Once training has made its first steps, SLURM delivers the warning: ``scancel --signal=URG`` sends it
to every process of the job's step, as the time-limit warning does. Training writes its checkpoint, requeues its
own job (``scontrol requeue``: the same job id, ``SLURM_RESTART_COUNT`` + 1) and exits; the next allocation resumes
and completes. The test asks that training took exactly two allocations of one job, and that the final weights equal
those of the same training run uninterrupted, outside SLURM, at the same time (resume is bit-exact: docs/model.md,
"Trainer").

Why not a real time limit of one minute (as this test had until stop 37): SLURM checks limits every 30 s, so when
the warning comes is left to chance; with ``URG@50`` it came 20-30 s into the job, with ``URG@30`` in none of 7
allocations on a loaded machine, which then ran to their limit and were resubmitted by Snakemake. The test took
12-14 minutes of CI and how many allocations it needed depended on the load. What the warning sets off in the job is
the same either way.

The data stages run first without SLURM (they are what tests/pipeline/test_slurm.py checks); the reference
training runs beside the SLURM job, sharing the cores with it.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from ..conftest import PROJECT_ROOT
from ..services.slurm import SlurmCluster, slurm_cluster_fixture  # noqa: F401 (fixture slurm_cluster)
from .conftest import BIN, copy_project, run, tool_env
from .test_e2e import TINY, TINY_UNTRACKED, commit, set_params
from .test_slurm import PROFILE

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
        reason="snakemake-executor-plugin-slurm not installed (pip install 'cpabanim[slurm]')",
    ),
]

# 120 steps: about 15 s of training here alone (8 steps a second), more on a loaded machine. The warning comes once
# training has written its checkpoint of step FIRST_STEPS (a file, seen within half a second; the stage's log shows
# its progress only every 30 s): the first allocation cannot finish, and the second does the rest.
STEPS = 120
FIRST_STEPS = 20
TIME_LIMIT_MIN = 15  # the job's limit: never reached here
WARNING_S = 50  # as the cluster profile asks (120 there)
CHECKPOINT = Path("models/checkpoints/default/seed0")


def requeue_profile(folder: Path) -> Path:
    """workflow/profiles/slurm-local with the train job warned and requeueable, as workflow/profiles/slurm asks for
    on a real cluster."""
    profile = yaml.safe_load((PROJECT_ROOT / PROFILE / "config.yaml").read_text())
    train = profile.setdefault("set-resources", {}).setdefault("train", {})
    train.update(runtime=TIME_LIMIT_MIN, slurm_extra=f"'--signal=URG@{WARNING_S} --requeue'")
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def weights(root: Path) -> dict[str, torch.Tensor]:
    state = torch.load(root / CHECKPOINT / "last.pt", map_location="cpu", weights_only=True)
    assert state["complete"] and state["step"] == STEPS, (state["complete"], state["step"])
    return dict(state["model"])


def progress(root: Path) -> str:
    """How far the SLURM job's training got: the step of its checkpoint, if it wrote one."""
    path = root / CHECKPOINT / "last.pt"
    if not path.is_file():
        return "no checkpoint written"
    return f"checkpoint at step {torch.load(path, map_location='cpu', weights_only=True)['step']} of {STEPS}"


def table(rows: list[dict[str, str]]) -> str:
    """sacct rows as lines of ``|``-separated values, for the test's output."""
    return "".join("|".join(row.values()) + "\n" for row in rows)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project, one experiment and one seed, whose data stages have run (locally)."""
    root = copy_project(tmp_path_factory.mktemp("requeue") / "slurm")
    values = {**TINY_UNTRACKED, "seeds": [0]}
    values["train"] = {**TINY["train"], "max_steps": STEPS, "checkpoint_every": FIRST_STEPS}
    values["data"] = {**TINY["data"], "num_repeats": 4}  # 8 steps an epoch: 100 epochs hold the STEPS
    set_params(root, values)
    run([str(BIN / "cpabanim"), "params", "--write", "params.resolved.yaml"], root)
    commit(root, "tiny parameters, more steps than one allocation does before its warning")
    run([str(BIN / "snakemake"), "--cores", "1", "--until", "masks"], root)
    return root


def first_checkpoint_written(root: Path) -> bool:
    """Training wrote its checkpoint of step FIRST_STEPS (atomically: the file is whole once it is there)."""
    return (root / CHECKPOINT / "last.pt").is_file()


def running_train_job(cluster: SlurmCluster) -> str | None:
    """The id of the cluster's running train job (the plugin's comment names the rule), if any."""
    rows = [job for job in cluster.queue() if job["state"] == "RUNNING" and job["comment"].startswith("rule_train")]
    return rows[0]["id"] if rows else None


def wait_for(condition, what: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Poll ``condition`` while Snakemake runs; fail naming ``what`` if Snakemake exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"snakemake exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"not after {timeout:.0f} s: {what}"
        time.sleep(0.5)


def warn_then_wait_for_the_requeue(project: Path, cluster: SlurmCluster, proc: subprocess.Popen) -> str:
    """Once training wrote its checkpoint of step FIRST_STEPS, SLURM's warning to its job's step; wait until the job
    is requeued. Returns the job id."""
    wait_for(lambda: first_checkpoint_written(project) and running_train_job(cluster), "the first steps", proc)
    job = running_train_job(cluster)
    cluster.run("scancel", "--signal=URG", job)

    def requeued() -> bool:
        return bool(re.search(r"\bRestarts=[1-9]", cluster.run("scontrol", "show", "job", job).stdout))

    wait_for(requeued, f"job {job} requeued after its warning", proc, timeout=120)
    return job


@pytest.mark.timeout(900)
def test_training_completes_across_allocations_with_the_weights_of_an_uninterrupted_run(
    project: Path, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(project, reference, symlinks=True)
    # the reference is not niced: under the CI's other worker a niced run got almost no CPU until the end
    uninterrupted = subprocess.Popen(
        [str(BIN / "snakemake"), "--cores", "1", "--until", "train"],
        cwd=reference,
        env=tool_env(reference),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    command = [str(BIN / "snakemake"), "--profile", str(requeue_profile(tmp_path / "profile")), "--until", "train"]
    output = tmp_path / "snakemake.log"
    with output.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=project, env=slurm_cluster.environ(tool_env(project)), stdout=out, stderr=subprocess.STDOUT
        )
        try:
            job = warn_then_wait_for_the_requeue(project, slurm_cluster, proc)
            returncode = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    seconds = time.monotonic() - started
    log = output.read_text()
    assert returncode == 0, (
        f"snakemake on SLURM failed ({returncode}) after {seconds:.0f} s, {progress(project)}:\n"
        + table(slurm_cluster.completed_jobs())
        + log[-5000:]
    )
    reference_log = uninterrupted.communicate(timeout=900)[0]
    assert uninterrupted.returncode == 0, reference_log[-4000:]

    jobs = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_train/", log)
    assert jobs == [job], (jobs, job)  # one job: requeued by training, never resubmitted by Snakemake
    # the job completion log has a line per allocation: the requeued one (back to PENDING), then the one that completed
    allocations = [row for row in slurm_cluster.completed_jobs() if row["JobIDRaw"] == job]
    sys.stderr.write(f"train on SLURM: {seconds:.0f} s, job {job}\n" + table(allocations))
    assert [row["State"] for row in allocations] == ["PENDING", "COMPLETED"], allocations
    restarts = slurm_cluster.run("scontrol", "show", "job", job).stdout
    assert re.search(r"\bRestarts=1\b", restarts), restarts
    # the stage's log is the last allocation's: it resumed (or found the training complete) and ends at STEPS
    train_log = (project / "logs" / "train" / "default" / "seed0.log").read_text()
    assert re.search(r"resuming from \S+ at step \d+|is complete \(step \d+\)", train_log), train_log[-3000:]
    assert f"training stopped at step {STEPS}" in train_log, train_log[-3000:]
    assert (project / CHECKPOINT / "complete.json").is_file()

    got, want = weights(project), weights(reference)
    assert got.keys() == want.keys()
    different = [key for key in want if not torch.equal(got[key], want[key])]
    assert not different, f"{len(different)} of {len(want)} tensors differ from the uninterrupted run: {different[:5]}"


def test_the_cluster_profile_asks_for_the_same_warning_and_requeue() -> None:
    """workflow/profiles/slurm's train job gets what the test above gives it: the URG warning and --requeue; so does
    the avd job, which stops and resumes the same way (tests/train/test_avd_stage.py)."""
    profile = yaml.safe_load((PROJECT_ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    for job in ("train", "avd"):
        extra = profile["set-resources"][job]["slurm_extra"]
        assert re.fullmatch(r"'--signal=URG@\d+ --requeue'", extra), extra
    assert profile["retries"] >= 1
