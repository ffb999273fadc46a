"""Snakemake and DVC declare the same stages: same commands, deps, params (and their values) and outs.

Both are read through the tools' own APIs (tests/pipeline/dag.py), so a rule edited on one side only fails here.
"""

from __future__ import annotations

import yaml

from cpabanim.cli import STAGES

from .conftest import stages_of

PIPELINE_STAGES = ["download", "preprocess", "masks", "train", "reconstruct", "animate", "evaluate", "report"]


def assert_same(snakemake: dict, dvc: dict) -> None:
    assert sorted(snakemake) == sorted(dvc), "the two tools declare different stages"
    for name in dvc:
        for field in ("cmd", "deps", "outs", "persist", "params", "param_values"):
            assert snakemake[name][field] == dvc[name][field], f"stage {name!r}: {field} differs"


def test_snakemake_and_dvc_declare_the_same_stages(project):
    snakemake, dvc = stages_of("snakemake", project), stages_of("dvc", project)
    assert sorted(dvc) == sorted(PIPELINE_STAGES)
    assert_same(snakemake, dvc)
    for name, stage in dvc.items():
        # every stage is the stage CLI, reading params.yaml; every CLI stage it calls exists
        assert stage["cmd"] == f"cpabanim {name} --params params.yaml" and name in STAGES
    # the trained checkpoints survive a re-run (resumable training) in both tools
    assert dvc["train"]["persist"] == ["models/checkpoints"]
    assert "outputs/metrics.json" in dvc["evaluate"]["outs"]


def test_they_stay_the_same_when_paths_and_values_change(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["paths"]["outputs"] = "results/run1"
    params["paths"]["checkpoints"] = "results/ckpt"
    params["seed"] = 7
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    snakemake, dvc = stages_of("snakemake", project), stages_of("dvc", project)
    assert_same(snakemake, dvc)
    assert "results/run1/metrics.json" in dvc["evaluate"]["outs"]
    assert dvc["train"]["persist"] == ["results/ckpt"] and "results/ckpt" in dvc["reconstruct"]["deps"]
    assert snakemake["train"]["param_values"]["seed"] == 7


def test_snakemake_preset_switches_reach_the_stages(project):
    from cpabanim.config import yaml_load

    from .conftest import BIN, run

    for switch in (["--configfile", "presets/vox-256.yaml"], ["--config", "preset=vox-256"]):
        out = run([str(BIN / "snakemake"), "-n", "-p", "--cores", "1", *switch], project)
        assert "cpabanim train --params .snakemake/cpabanim/params.yaml" in out.stdout + out.stderr
        resolved = yaml_load((project / ".snakemake" / "cpabanim" / "params.yaml").read_text())
        assert resolved["data"]["source"] == "vox" and resolved["model"]["num_cpab"] == 10
    bad = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--config", "device=tpu"], project, check=False)
    assert bad.returncode != 0 and "device" in bad.stdout + bad.stderr
