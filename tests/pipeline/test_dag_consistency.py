"""Snakemake and DVC see the same stages, generated from one declaration each (cpabanim/pipeline/).

Both are read through the tools' own APIs (tests/pipeline/dag.py): inputs, outputs, persistent folders, and the
parameter keys (DVC tracks exactly the keys a stage declares; Snakemake re-runs a job when their values change).
"""

from __future__ import annotations

from cpabanim.pipeline import all_stages
from cpabanim.pipeline.code import code_digest

from .conftest import BIN, run, stages_of


def test_snakemake_and_dvc_declare_the_same_stages(project):
    snakemake, dvc = stages_of("snakemake", project), stages_of("dvc", project)
    declared = all_stages()
    # a sharded stage is two in each tool: its shard jobs (<name>_shard) and its gather (<name>)
    names = [*declared, *(f"{name}_shard" for name, stage in declared.items() if stage.shards)]
    assert sorted(snakemake) == sorted(names) and sorted(dvc) == sorted([*names, "params"])
    for name in [n for n in names if n.endswith("_shard")]:
        stage = declared[name[: -len("_shard")]]
        for field in ("deps", "outs"):
            assert snakemake[name][field] == dvc[name][field], f"stage {name!r}: {field} differs"
        assert dvc[name]["code"] == list(stage.code) and snakemake[name]["code"] == code_digest(stage.module)
        # Snakemake tracks the record inside a shard's folder (a re-run resumes it); DVC caches the folder, which
        # `dvc exp run --temp` then restores (it restores no persistent output)
        # a per-experiment stage's shards: a matrix over the seeds and the shards (reconstruct_shard@0-003)
        seed = " --set seed={seed}" if stage.per_experiment else ""
        assert dvc[name]["cmd"] == f"cpabanim {name[: -len('_shard')]} --shard {{shard}}{seed}"
        assert dvc[name]["seeds"] == ([0] if stage.per_experiment else [])
        assert snakemake[name]["shell"].startswith(f"cpabanim {name[: -len('_shard')]} --shard {{wildcards.shard}} ")
        assert dvc[name]["persist"] == []
    for name, stage in declared.items():
        for field in ("deps", "outs", "persist"):
            if stage.aggregate and field == "deps":  # DVC: each experiment's folder, which holds every seed's
                assert dvc[name][field] == sorted({p.split("/seed{seed}")[0] for p in snakemake[name][field]})
                continue
            assert snakemake[name][field] == dvc[name][field], f"stage {name!r}: {field} differs"
        # DVC: a per-experiment stage is one stage per seed of params.yaml, the seed on its command line
        seeded = stage.per_experiment
        assert dvc[name]["params"] == sorted(k for k in stage.params if not (seeded and k == "seed"))
        gather = " --gather" if stage.shards else ""
        assert dvc[name]["cmd"] == f"cpabanim {name}{gather}" + (" --set seed={seed}" if seeded else "")
        assert dvc[name]["seeds"] == ([0] if seeded else [])
        assert snakemake[name]["shell"].startswith(f"cpabanim {name}{gather} ")
        # the code it runs: DVC hashes the paths, Snakemake re-runs on the digest of the same files
        assert dvc[name]["code"] == list(stage.code) and snakemake[name]["code"] == code_digest(stage.module)
    # module files, not packages (tests/pipeline/test_code_deps.py checks the lists themselves)
    assert {"cpabanim/models/full.py", "cpabanim/data/augmentation.py"} <= set(dvc["train"]["code"])
    assert "cpabanim/reporting/report.py" not in dvc["train"]["code"]
    assert "cpabanim/reporting/report.py" in dvc["report"]["code"]
    assert not any(p.startswith("cpabanim/models/") for p in dvc["preprocess"]["code"])
    assert "cpabanim/data/augmentation.py" not in dvc["preprocess"]["code"]
    # downloads and checkpoints survive re-runs in both tools; experiments get their own folders
    assert dvc["download"]["persist"] == ["data/raw"]
    assert dvc["train"]["persist"] == ["models/checkpoints/{experiment}/seed{seed}"]
    assert "outputs/{experiment}/seed{seed}/metrics.json" in dvc["evaluate"]["outs"]
    # keys, not sections: the data keys that only training reads do not reach download or preprocess
    for stage in ("download", "preprocess"):
        assert not {"data.augmentation", "data.num_repeats", "seed" if stage == "download" else "-"} & set(
            dvc[stage]["params"]
        )


def test_paths_in_params_reach_both_tools(project):
    (project / "params.yaml").write_text(
        "experiment: default\nseeds: [0]\npaths: {outputs: results/run1, checkpoints: results/ckpt}\n"
    )
    run([str(BIN / "cpabanim"), "dag", "--write"], project)
    snakemake, dvc = stages_of("snakemake", project), stages_of("dvc", project)
    assert snakemake["evaluate"]["outs"] == dvc["evaluate"]["outs"]
    assert "results/run1/{experiment}/seed{seed}/metrics.json" in dvc["evaluate"]["outs"]
    assert dvc["train"]["persist"] == ["results/ckpt/{experiment}/seed{seed}"] == snakemake["train"]["persist"]


def test_snakemake_command_line_values_reach_the_stages(project):
    import yaml

    written = project / ".snakemake" / "cpabanim" / "overrides.yaml"
    for switch in (["--config", "set=[train.max_steps=5]"], ["--config", "train={max_steps: 5}"]):
        out = run([str(BIN / "snakemake"), "-n", "-p", "--cores", "1", *switch], project)
        # through one file, so that a job's command line (a re-run trigger) never carries keys it does not read
        assert "cpabanim train --overrides=.snakemake/cpabanim/overrides.yaml --experiment=default --set=seed=0" in (
            out.stdout
        )
        # a shared stage's command line names no experiment: the experiment list never re-runs it
        assert "cpabanim preprocess --gather --overrides=.snakemake/cpabanim/overrides.yaml > " in out.stdout
        assert "cpabanim preprocess --shard 007 --overrides=.snakemake/cpabanim/overrides.yaml > " in out.stdout
        assert yaml.safe_load(written.read_text()) == {"train": {"max_steps": 5}}
    run([str(BIN / "snakemake"), "-n", "--cores", "1", "--config", "preset=vox-256"], project)
    assert yaml.safe_load(written.read_text()) == {"preset": "vox-256"}
    bad = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--config", "device=tpu"], project, check=False)
    assert bad.returncode != 0 and "device" in bad.stdout + bad.stderr and "cpabanim:" in bad.stdout + bad.stderr
