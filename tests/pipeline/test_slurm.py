"""The pipeline on a real SLURM cluster (issue 22): `snakemake --profile workflow/profiles/slurm-local`, every job
through `sbatch` by the official executor plugin (snakemake-executor-plugin-slurm), on the one-node cluster of
tests/services/slurm.py.

One tiny run (the e2e test's TINY settings, one experiment, one seed) of the first three stages: download,
preprocess and masks. Then: each stage's job is in the accounting (`sacct -c`, the job completion log) under the
run's name, completed on the profile's partition, with the plugin's comment naming its rule; the outputs are there,
and `cpabanim record` committed the stages the jobs noted in the run's journal; a dry run has nothing to do; a
partition the cluster lacks fails at submission with sbatch's message naming it; the trainings of two experiments,
each asking for one of the cluster's GPUs, run side by side.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cpabanim.pipeline import all_stages

from ..conftest import PROJECT_ROOT
from ..services.slurm import PARTITION, SlurmCluster, slurm_cluster_fixture  # noqa: F401 (fixture slurm_cluster)
from .conftest import BIN, copy_project, run, tool_env
from .test_e2e import TINY, TINY_UNTRACKED, commit, set_params

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("snakemake_executor_plugin_slurm") is None,
        reason="snakemake-executor-plugin-slurm not installed (pip install 'cpabanim[slurm]')",
    ),
]

PROFILE = Path("workflow") / "profiles" / "slurm-local"
# the cheapest chain of stages that still has a GPU stage in it (the shared data stages; no training)
STAGES = ("download", "preprocess", "masks")
OUTPUTS = ("data/raw/synthetic/manifest.json", "data/processed", "data/masks")
TARGET = ["--until", STAGES[-1]]


@dataclass(frozen=True)
class SlurmRun:
    """One finished `snakemake --profile workflow/profiles/slurm-local` run: where, its output, how long."""

    root: Path
    log: str
    seconds: float


def snakemake(root: Path, cluster: SlurmCluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Snakemake in ``root`` with the tools' environment and the cluster's (the jobs inherit both: sbatch
    exports the environment, so they find the venv's `cpabanim` and this cluster's slurm.conf)."""
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=root,
        env=cluster.environ(tool_env(root)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_project(root: Path) -> Path:
    """A copied project on the e2e test's tiny settings, with one experiment and one seed."""
    copy_project(root)
    set_params(root, {**TINY_UNTRACKED, "seeds": [0]})
    run([str(BIN / "cpabanim"), "params", "--write", "params.resolved.yaml"], root)
    commit(root, "tiny parameters")
    return root


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> SlurmRun:
    """The one SLURM run the tests below check (a run costs about a minute: shared, not repeated)."""
    root = tiny_project(tmp_path_factory.mktemp("slurm-run") / "project")
    started = time.monotonic()
    result = snakemake(root, slurm_cluster, "--profile", str(PROFILE), *TARGET)
    seconds = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake on SLURM failed ({result.returncode}):\n{log[-8000:]}"
    sys.stderr.write(f"snakemake on the local SLURM cluster: {seconds:.0f} s\n")
    return SlurmRun(root, log, seconds)


def submitted(log: str) -> dict[str, str]:
    """The rule of each SLURM job, by job id, from the plugin's lines ``Job 3 has been submitted with SLURM jobid
    12 (log: .../slurm_logs/rule_download/12.log)``: one job per rule, one per shard of a sharded stage."""
    found = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", log)
    return {job: rule for job, rule in found}


def rules_of(stages: tuple[str, ...]) -> dict[str, int]:
    """The Snakemake rules of ``stages`` and their job counts with the TINY settings (a sharded stage: its shards'
    rule, and its gather)."""
    counts = {}
    for name in stages:
        stage = all_stages()[name]
        if stage.shards:
            counts[f"{name}_shard"] = int(TINY[stage.shards.split(".")[0]]["shards"])
        counts[name] = 1
    return counts


def test_the_local_profile_targets_the_local_cluster() -> None:
    """The profile and tests/services/slurm.py agree on the partition; no GPU count is set anywhere but in the
    rules: the cluster's GPUs decide how many GPU jobs run (docs/cluster.md, "GPUs")."""
    profile = yaml.safe_load((PROJECT_ROOT / PROFILE / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert profile["default-resources"]["slurm_partition"] == PARTITION
    assert "gpu" not in profile.get("resources", {})
    assert not any("gpu" in resources for resources in profile.get("set-resources", {}).values())


def test_every_job_goes_through_sbatch_and_is_accounted(slurm_run: SlurmRun, slurm_cluster: SlurmCluster) -> None:
    run_id = re.search(r"SLURM run ID: (\S+)", slurm_run.log).group(1)
    jobs = submitted(slurm_run.log)
    assert {rule: list(jobs.values()).count(rule) for rule in jobs.values()} == rules_of(STAGES), slurm_run.log[-4000:]
    assert not re.findall(r"^\s*localrule (\w+):", slurm_run.log, re.M), "every job on the cluster"
    # the accounting: the job completion log lists each job under the run's name, done on the profile's partition
    accounted = {row["JobIDRaw"]: row for row in slurm_cluster.completed_jobs() if row["JobName"] == run_id}
    assert set(accounted) == set(jobs), accounted
    sys.stderr.write("sacct -c:\n" + "".join("|".join(row.values()) + "\n" for row in accounted.values()))
    for row in accounted.values():
        assert (row["State"], row["ExitCode"], row["Partition"]) == ("COMPLETED", "0:0", slurm_cluster.partition)
    # slurmctld still holds the finished jobs (MinJobAge) with the plugin's comment: which rule each job ran
    comments = {job["id"]: job["comment"] for job in slurm_cluster.queue()}
    # the plugin's comment names the rule (and a shard job's wildcard: rule_preprocess_shard_wildcards_000)
    assert all(comments[job].split("_wildcards_")[0] == f"rule_{rule}" for job, rule in jobs.items()), comments


def test_the_outputs_are_there_and_a_dry_run_has_nothing_to_do(
    slurm_run: SlurmRun,
    slurm_cluster: SlurmCluster,
) -> None:
    root = slurm_run.root
    for output in OUTPUTS:
        path = root / output
        assert path.is_file() or any(path.iterdir()), output
    for stage in STAGES:
        assert (root / "logs" / f"{stage}.log").is_file(), stage
    # each job noted its stage in the run's journal from its node: `cpabanim record` committed exactly those, the
    # stages of dvc.yaml up to masks (shards included)
    recorded = re.search(r"recorded in dvc\.lock: (.*)$", slurm_run.log, re.M).group(1).split(", ")
    names = run([str(BIN / "dvc"), "stage", "list", "--name-only"], root).stdout.split()
    assert recorded == names[: names.index(STAGES[-1]) + 1], recorded
    dry = snakemake(root, slurm_cluster, "-n", "--profile", str(PROFILE), *TARGET)
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out[-4000:]
    assert not re.findall(r"^\s*(?:local)?rule (\w+):", out, re.M), out[-4000:]
    assert re.search(r"^total\s+0$", out, re.M), out[-4000:]


def test_a_partition_the_cluster_lacks_is_named_in_the_error(
    slurm_cluster: SlurmCluster,
    tmp_path: Path,
) -> None:
    """sbatch refuses the job; the plugin reports sbatch's message, which names the partition."""
    profile = yaml.safe_load((PROJECT_ROOT / PROFILE / "config.yaml").read_text())
    profile["default-resources"]["slurm_partition"] = "no-such-partition"
    (tmp_path / "bad-profile").mkdir()
    (tmp_path / "bad-profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    root = copy_project(tmp_path / "project")
    result = snakemake(root, slurm_cluster, "--profile", str(tmp_path / "bad-profile"), "--until", "download")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-4000:]
    assert "SLURM sbatch failed" in out, out[-4000:]
    assert "invalid partition specified: no-such-partition" in out, out[-4000:]


def test_the_cluster_example_profile_is_accepted(slurm_run: SlurmRun, slurm_cluster: SlurmCluster) -> None:
    """workflow/profiles/slurm (the example for a real cluster: its partitions and account exist only there) is
    read by Snakemake and the plugin, and plans the GPU stages on its GPU partition."""
    dry = snakemake(slurm_run.root, slurm_cluster, "-n", "--profile", "workflow/profiles/slurm", "--forceall")
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, out[-4000:]
    assert re.search(r"rule masks_shard:(?:\n\s+.*)*?\n\s+resources:.*slurm_partition=gpu", out), out[-4000:]


def test_two_trainings_reach_slurm_before_either_finishes(slurm_run: SlurmRun, slurm_cluster: SlurmCluster) -> None:
    """Two experiments' trainings, each asking the cluster for a GPU (`sbatch --gpus=1`; the node has 2), with no
    `--resources`: both are submitted at once and run side by side. The submit host does not count GPUs (the
    `gpu` resource's scope is local): a cluster of many GPUs is not held to one GPU job at a time."""
    result = snakemake(
        slurm_run.root,
        slurm_cluster,
        "--profile",
        str(PROFILE),
        "--config",
        "experiments=[cpab,tps]",
        "--until",
        "train",
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    jobs = [job for job, rule in submitted(log).items() if rule == "train"]
    assert len(jobs) == 2, log[-4000:]
    for job in jobs:  # each asked SLURM for a GPU
        assert "gpu:1" in slurm_cluster.run("scontrol", "show", "job", job).stdout, job
    rows = [row for row in slurm_cluster.completed_jobs() if row["JobIDRaw"] in jobs]
    assert [row["State"] for row in rows] == ["COMPLETED", "COMPLETED"], rows
    # ISO times compare as strings: each started before the other ended
    assert max(row["Start"] for row in rows) < min(row["End"] for row in rows), rows
