"""Training across SLURM allocations (issue 22): a time limit, its warning, a checkpoint, a requeue, a resume.

The train stage runs through `snakemake --profile workflow/profiles/slurm-local` on the one-node cluster of
tests/services/slurm.py with a one-minute time limit and the warning the cluster profile asks for
(``--signal=URG@<s> --requeue``, docs/model.md "Preemption"), and more steps than one allocation has time for.
Each warning makes training write its checkpoint, requeue its own job (``scontrol requeue``: the same job id,
``SLURM_RESTART_COUNT`` + 1) and exit; the next allocation resumes. The test asks that training completes, that
it took at least two allocations, and that the final weights equal those of the same training run uninterrupted,
outside SLURM, at the same time (resume is bit-exact: docs/model.md, "Trainer").

The data stages run first without SLURM (they are what tests/pipeline/test_slurm.py checks); the reference
training runs beside the SLURM job on the other core.
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
from .test_e2e import TINY, commit, set_params
from .test_slurm import PROFILE, snakemake

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
        reason="snakemake-executor-plugin-slurm not installed (pip install 'cpabanim[slurm]')",
    ),
]

# When the warning comes: slurmctld checks time limits every 30 s, and may send the warning earlier than asked (its
# event resolution, `man sbatch`) or, seen here now and then (most often for a requeued job), not before the limit.
# Asked for 50 s before a one-minute limit, it came 20-30 s after the start; start-up takes about 10 s. 560 steps
# (about 8 a second: 70 s of training) outlast any one allocation, warned or not: with the warning, training
# checkpoints, requeues its job and resumes; without it, the limit's SIGTERM makes it checkpoint and exit (TIMEOUT),
# and `retries` resubmit the job, which resumes. Either way two or more allocations, each one's steps kept.
# How many allocations depends on the machine's speed and load: 2 here alone (536 steps in the first), 3 with three
# busy loops beside it, and more than 3 on the CI machine at stop 32, where the e2e pipeline ran beside it (the
# test starts first). RETRIES leaves room for 7; the reference training runs at the lowest priority (nice 19), so
# that it takes only the CPU the SLURM job leaves, and a failure says how far training got.
STEPS = 560
RETRIES = 6
TIME_LIMIT_MIN = 1
WARNING_S = 50
CHECKPOINT = Path("models/checkpoints/default/seed0")


def requeue_profile(folder: Path) -> Path:
    """workflow/profiles/slurm-local with the train job under a one-minute limit, warned and requeueable, as
    workflow/profiles/slurm asks for on a real cluster; ``retries`` resubmit a job that timed out regardless."""
    profile = yaml.safe_load((PROJECT_ROOT / PROFILE / "config.yaml").read_text())
    train = profile["set-resources"]["train"]
    train.update(runtime=TIME_LIMIT_MIN, slurm_extra=f"'--signal=URG@{WARNING_S} --requeue'")
    profile["retries"] = RETRIES
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
    values = {**TINY, "seeds": [0]}
    values["train"] = {**TINY["train"], "max_steps": STEPS, "checkpoint_every": 10 * STEPS}
    values["data"] = {**TINY["data"], "num_repeats": 4}  # 8 steps an epoch: 100 epochs hold the STEPS
    set_params(root, values)
    run([str(BIN / "cpabanim"), "params", "--write", "params.resolved.yaml"], root)
    commit(root, "tiny parameters, more steps than one allocation has time for")
    run([str(BIN / "snakemake"), "--cores", "1", "--until", "masks"], root)
    return root


# up to RETRIES + 1 allocations of about two minutes each (the limit, the plugin's polls) on a loaded machine: past
# the suite's 900 s per test (with a busy loop on each core, the whole suite took 35 min and this test 900 s+)
@pytest.mark.timeout(1800)
def test_training_completes_across_allocations_with_the_weights_of_an_uninterrupted_run(
    project: Path, slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    reference = tmp_path / "reference"
    shutil.copytree(project, reference, symlinks=True)
    uninterrupted = subprocess.Popen(
        ["nice", "-n", "19", str(BIN / "snakemake"), "--cores", "1", "--until", "train"],
        cwd=reference,
        env=tool_env(reference),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    result = snakemake(
        project,
        slurm_cluster,
        "--profile",
        str(requeue_profile(tmp_path / "profile")),
        "--until",
        "train",
        timeout=1500,
    )
    seconds = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"snakemake on SLURM failed ({result.returncode}) after {seconds:.0f} s, {progress(project)}:\n"
        + table(slurm_cluster.completed_jobs())
        + log[-5000:]
    )
    reference_log = uninterrupted.communicate(timeout=900)[0]
    assert uninterrupted.returncode == 0, reference_log[-4000:]

    jobs = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_train/", log)
    # the job completion log has a line per allocation: requeued ones (back to PENDING), then the one that completed
    allocations = [row for row in slurm_cluster.completed_jobs() if row["JobIDRaw"] in jobs]
    sys.stderr.write(f"train on SLURM: {seconds:.0f} s, jobs {jobs}\n" + table(allocations))
    assert jobs and len(allocations) >= 2, f"training ended within one allocation: {allocations}\n{log[-4000:]}"
    assert allocations[-1]["State"] == "COMPLETED", allocations
    assert {row["State"] for row in allocations[:-1]} <= {"PENDING", "REQUEUED", "TIMEOUT"}, allocations
    restarts = slurm_cluster.run("scontrol", "show", "job", jobs[-1]).stdout
    assert re.search(r"\bRestarts=[1-9]", restarts) or len(jobs) > 1, restarts
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
