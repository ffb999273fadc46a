"""The sharded data stages in both orchestrators (docs/data.md, "Shards"): Snakemake with 1 shard and DVC with the
8 of dvc.yaml give the same archives; a shard that did not finish is the only shard either tool plans again;
Snakemake's re-run rewrites none of the videos it had finished (it never deletes a shard's folder), DVC's makes that
one shard again."""

from __future__ import annotations

import json
import re

from tests.data.helpers import processed_archives
from tests.pipeline.conftest import BIN, run

SMALL = ["data.synthetic.num_train=6", "data.synthetic.num_test=2", "data.synthetic.num_frames=4"]


def _small(project) -> None:
    """The embedded default, smaller: params.yaml itself, so that DVC's stages read the same values."""
    text = (project / "params.yaml").read_text()
    text += "data:\n  synthetic: {num_train: 6, num_test: 2, num_frames: 4}\n"
    text += "tracking: {enabled: false}\n"  # the archives are checked, not tracking (and MLflow's start-up is slow)
    (project / "params.yaml").write_text(text)
    run([str(BIN / "cpabanim"), "params", "--write", "params.resolved.yaml"], project)


def _mtimes(shard) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in shard.glob("*/*.zip")}


def test_eight_dvc_shards_and_one_snakemake_shard_give_the_same_archives_and_resume(project):
    _small(project)
    processed = project / "data" / "processed"
    run([str(BIN / "dvc"), "repro", "preprocess"], project)
    assert sorted(p.name for p in (processed / "shards").iterdir()) == [f"{k:03d}" for k in range(8)]
    eight = processed_archives(processed)
    assert len(eight) == 8

    # a shard that did not finish (its record is written last): DVC names it alone; DVC deletes a shard's folder
    # before it runs it again (a persistent one would not come into `dvc exp run --temp` workspaces), so the shard is
    # made again whole, to the same bytes
    shard = next(p for p in sorted((processed / "shards").iterdir()) if list(p.glob("*/*.zip")))
    before = _mtimes(shard)
    (shard / "done.json").unlink()
    status = run([str(BIN / "dvc"), "status"], project).stdout
    changed = {name for name in re.findall(r"^(\S+):\s*$", status, flags=re.M) if name.startswith("preprocess")}
    assert changed == {f"preprocess_shard@{shard.name}", "preprocess"}, status  # the shard, and the gather after it
    run([str(BIN / "dvc"), "repro", "preprocess"], project)
    assert (shard / "done.json").is_file() and _mtimes(shard).keys() == before.keys()
    assert processed_archives(processed) == eight

    # Snakemake with one shard (forced: it keeps no record of what DVC made): the same bytes, whichever shard holds
    # each video
    one = ["--config", "set=[data.shards=1]"]
    run(
        [str(BIN / "snakemake"), "--cores", "2", "data/processed/manifest.json", "-R", "preprocess_shard", *one],
        project,
    )
    assert sorted(p.name for p in (processed / "shards").iterdir()) == ["000"]
    assert processed_archives(processed) == eight
    assert json.loads((processed / "manifest.json").read_text())["shards"] == 1

    # the shard unfinished is the one job Snakemake plans; its folder is kept (only the record is its output), and
    # the videos it had finished are not written again
    shard = processed / "shards" / "000"
    before = _mtimes(shard)
    (shard / "done.json").unlink()
    # (`snakemake --cores all` asks for every shard's record through `rule all`, as this does)
    targets = ["data/processed/shards/000/done.json", "data/processed/manifest.json"]
    plan = run([str(BIN / "snakemake"), "-n", *targets, *one], project).stdout
    assert "Job stats:" in plan, plan
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", plan.split("Job stats:")[1], flags=re.M))
    assert jobs.get("preprocess_shard") == "1" and "download" not in jobs, plan
    run([str(BIN / "snakemake"), "--cores", "2", *targets, *one], project)
    assert (shard / "done.json").is_file() and _mtimes(shard) == before and len(before) == 8
    assert processed_archives(processed) == eight
