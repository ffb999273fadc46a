"""The sharded per-experiment stages in both orchestrators (docs/pipeline.md, "Sharded stages"): DVC with 3 shards
of reconstruct and of evaluate per run (dvc.yaml's matrix over seeds x shards) and Snakemake with 1 give the same
reconstruction and the same metrics files, byte for byte; an evaluate shard that did not finish is the one job
Snakemake plans again, and it keeps the records it had made."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.pipeline.conftest import BIN, run

pytestmark = pytest.mark.slow

RUN = "outputs/default/seed0"
METRICS_FILES = ("metrics.json", "metrics_unavailable.json", "metrics_per_video.csv")
TINY = {
    "data": {"frame_size": 32, "shards": 1, "synthetic": {"num_train": 4, "num_test": 3, "num_frames": 6}},
    "masks": {"shards": 1},
    "train": {
        "max_steps": 2,
        "batch_size": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "image_every": 0,
        "avd_epochs": 1,
        "avd_repeats": 1,
        "avd_batch_size": 2,
        "num_workers": 0,
    },
    "reconstruct": {"max_frames": 4, "shards": 3, "gif": False},
    "animate": {"num_pairs": 2, "modes": ["relative"], "gif": False},
    "evaluate": {"shards": 3},
    "tracking": {"enabled": False},
}


def outputs(project) -> dict[str, bytes]:
    """The run's metrics files and its reconstruction folder (every file, marks aside), by path."""
    run_folder = project / RUN
    found = {name: (run_folder / name).read_bytes() for name in METRICS_FILES}
    recon = run_folder / "reconstruction"
    found |= {str(p.relative_to(run_folder)): p.read_bytes() for p in recon.rglob("*") if p.is_file()}
    return {k: v for k, v in found.items() if not k.split("/")[-1].startswith(".")}


def jobs_of(plan: str) -> dict[str, str]:
    assert "Job stats:" in plan, plan
    return dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("Job stats:")[1], flags=re.M))


def test_three_dvc_shards_and_one_snakemake_shard_give_the_same_metrics(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    (project / "params.yaml").write_text(yaml.safe_dump({**params, **TINY}, sort_keys=False))
    run([str(BIN / "cpabanim"), "params", "--write", "params.resolved.yaml"], project)
    run([str(BIN / "cpabanim"), "dag", "--write"], project)  # dvc.yaml's matrix: seeds x 3 shards
    run([str(BIN / "dvc"), "repro", "evaluate"], project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    for stage in ("reconstruct", "evaluate"):
        assert {f"{stage}_shard@0-{k:03d}" for k in range(3)} | {f"{stage}@0"} <= set(lock), sorted(lock)
    shards = [json.loads((project / RUN / "shards/evaluate" / f"{k:03d}/done.json").read_text()) for k in range(3)]
    assert sum(1 for record in shards if record["videos"]) > 1  # the videos are spread over the shards
    three = outputs(project)
    assert len(three) > 3 + 3 * 4 and json.loads(three["metrics.json"])["recon/frames"] == 12

    # Snakemake with one shard of each (forced: it keeps no record of what DVC made), the same bytes
    one = ["--config", "set=[reconstruct.shards=1,evaluate.shards=1]"]
    target = f"{RUN}/metrics.json"
    run([str(BIN / "snakemake"), "--cores", "2", target, "-R", "reconstruct_shard", *one], project)
    assert sorted(p.name for p in (project / RUN / "shards/evaluate").iterdir()) == ["000"]
    assert outputs(project) == three

    # an evaluate shard that did not finish: the one shard job planned (and the gather); its records are kept
    shard = project / RUN / "shards/evaluate/000"
    records = {p: p.stat().st_mtime_ns for p in shard.rglob("*.npz")}
    (shard / "done.json").unlink()
    # (`snakemake --cores all` asks for every shard's record through `rule all`, as this does)
    targets = [f"{RUN}/shards/evaluate/000/done.json", target]
    jobs = jobs_of(run([str(BIN / "snakemake"), "-n", *targets, *one], project).stdout)
    assert jobs == {"evaluate_shard": "1", "evaluate": "1", "total": "2"}, jobs
    run([str(BIN / "snakemake"), "--cores", "2", *targets, *one], project)
    assert {p: p.stat().st_mtime_ns for p in shard.rglob("*.npz")} == records and len(records) == 3 + 2
    assert outputs(project) == three
