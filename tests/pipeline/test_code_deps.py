"""Code dependencies as fine as the code, and a record of only what ran (issue 33).

Each stage depends on the module files it imports, transitively (cpabanim/pipeline/code.py), not on whole
packages: a module only training reads never re-runs the data stages. After a Snakemake run, `cpabanim record`
commits the stages its jobs noted in the run's journal (cpabanim/pipeline/journal.py), not every stage whose files
exist. The real tools' view of both is checked on the tiny pipeline's finished runs (tests/pipeline/test_e2e.py:
a code edit, and the record of a run that made only the report).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest

from cpabanim.commands import record
from cpabanim.config.layers import load_params
from cpabanim.config.mappings import flatten
from cpabanim.pipeline import all_stages, run_seeds, stage_io
from cpabanim.pipeline.base import expand
from cpabanim.pipeline.code import NOT_OUTPUTS, PACKAGE_ROOT, imported_closure
from cpabanim.pipeline.journal import (
    JOURNAL_ENV,
    JOURNAL_ROOT,
    clear,
    completed_names,
    dvc_stage_name,
    note_completed,
    read_journal,
)

from ..conftest import PROJECT_ROOT

DATA_STAGES = ("download", "preprocess", "masks")
READ_BY_TRAINING_ONLY = ("cpabanim/data/augmentation.py", "cpabanim/data/dataset.py", "cpabanim/data/loader.py")


def test_each_stage_depends_on_the_module_files_it_imports_not_on_packages():
    stages = all_stages()
    for name in DATA_STAGES:
        code = stages[name].code
        assert not set(READ_BY_TRAINING_ONLY) & set(code), name
        assert not [path for path in code if path.startswith(("cpabanim/models/", "cpabanim/training/"))], name
        assert f"cpabanim/pipeline/{name}.py" in code and f"cpabanim/data/{name}.py" in code
    for name, stage in stages.items():  # of cpabanim/pipeline/, its own module only (and what runs any stage)
        own = {"__init__.py", "base.py", f"{name}.py"}
        assert {p.split("/")[-1] for p in stage.code if p.startswith("cpabanim/pipeline/")} == own, name
    train = stages["train"].code
    assert set(READ_BY_TRAINING_ONLY) <= set(train) and "cpabanim/models/full.py" in train
    assert "cpabanim/reporting/report.py" not in train and "cpabanim/pipeline/preprocess.py" not in train
    assert "cpabanim/reporting/report.py" in stages["report"].code


def test_the_lists_are_files_with_the_packages_that_importing_them_runs():
    root = PACKAGE_ROOT.parent
    for name, stage in all_stages().items():
        code = stage.code
        assert list(code) == sorted(set(code)) and all((root / path).is_file() for path in code), name
        for path in code:  # cpabanim/data/video.py: importing it runs cpabanim/data/__init__.py
            parts = Path(path).parts
            for depth in range(2, len(parts)):
                if ".".join(parts[:depth]) not in NOT_OUTPUTS:  # cpabanim/tracking/__init__.py: logging only
                    assert str(Path(*parts[:depth], "__init__.py")) in code, f"{name}: {path} without its package"
        assert len(code) == len(imported_closure(stage.module) - set(NOT_OUTPUTS)), name


def test_modules_that_cannot_change_outputs_are_nobodys_dependency():
    """Logging, progress bars, the version, the dependency finder and the journal: editing them re-runs nothing.
    The MLflow modules the report reads its runs with stay its dependencies."""
    listed = {path for stage in all_stages().values() for path in stage.code}
    for module in NOT_OUTPUTS:
        relative = module.replace(".", "/")
        assert not {f"{relative}.py", f"{relative}/__init__.py"} & listed, module
    assert {"cpabanim/tracking/runs.py", "cpabanim/tracking/store.py"} <= set(all_stages()["report"].code)
    # every name of the list is a module (a renamed one would silently become a dependency again)
    root = PACKAGE_ROOT.parent
    for module in NOT_OUTPUTS:
        relative = Path(*module.split("."))
        assert (root / relative.with_suffix(".py")).is_file() or (root / relative / "__init__.py").is_file(), module


# --------------------------------------------------------------------------------------------------------------
# the journal and `cpabanim record`


def test_the_dvc_stage_name_of_a_run():
    stages = all_stages()
    assert dvc_stage_name(stages["train"], {"seed": 3, "experiment": "tps"}) == "train@3"
    assert dvc_stage_name(stages["download"], {"seed": 3, "experiment": "default"}) == "download"
    assert dvc_stage_name(stages["report"], {"seed": 0, "experiment": "default"}) == "report"
    # a sharded stage: its shards (dvc.yaml's foreach over "000", "001", ...) and its gather
    assert dvc_stage_name(stages["preprocess"], {"seed": 0}, shard=3) == "preprocess_shard@003"
    assert dvc_stage_name(stages["preprocess"], {"seed": 0}) == "preprocess"
    params = load_params(PROJECT_ROOT / "params.yaml")
    dvc_yaml = (PROJECT_ROOT / "dvc.yaml").read_text()
    # a per-experiment sharded stage: a matrix over the seeds and the shards, then a gather per seed
    assert dvc_stage_name(stages["evaluate"], {"seed": 1}, shard=3) == "evaluate_shard@1-003"
    assert dvc_stage_name(stages["evaluate"], {"seed": 1}) == "evaluate@1"
    for name, stage in stages.items():
        if stage.shards:  # the names are dvc.yaml's
            shards = [f"{k:03d}" for k in range(int(flatten(params)[stage.shards]))]
            listed = "".join(f"{'  ' if stage.per_experiment else ''}    - '{k}'\n" for k in shards)
            loop = "    matrix:\n      seed: ${seeds}\n      shard:\n" if stage.per_experiment else "    foreach:\n"
            assert f"  {name}_shard:\n{loop}{listed}" in dvc_yaml
            run_by_hand = completed_names(stage, params)  # every shard, then the gather
            gather = f"{name}@{params['seed']}" if stage.per_experiment else name
            assert run_by_hand == [*(dvc_stage_name(stage, params, int(k)) for k in shards), gather]
            seed = f"{params['seed']}-" if stage.per_experiment else ""
            assert completed_names(stage, params, shard=0) == [f"{name}_shard@{seed}000"]
            assert completed_names(stage, params, gather=True) == [gather]


def test_a_completed_stage_is_one_empty_file_per_stage_in_its_invocations_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stages = all_stages()
    default, tps = {"seed": 0, "experiment": "default"}, {"seed": 0, "experiment": "tps"}
    assert note_completed(stages["train"], default, environ={}) == []  # not a Snakemake job
    assert not (tmp_path / ".snakemake").exists()
    environ = {JOURNAL_ENV: str(JOURNAL_ROOT / "snakemake-1-1")}
    note_completed(stages["download"], default, environ=environ)
    note_completed(stages["preprocess"], default, shard=1, environ=environ)
    note_completed(stages["preprocess"], default, gather=True, environ=environ)
    note_completed(stages["train"], {**default, "seed": 1}, environ=environ)
    note_completed(stages["train"], {**default, "seed": 1}, environ=environ)  # a retry: the same file
    note_completed(stages["train"], tps, environ=environ)
    # a failed invocation's leftovers (never recorded) and a file system's hidden leftover, skipped
    note_completed(stages["masks"], default, shard=0, environ={JOURNAL_ENV: str(JOURNAL_ROOT / "old")})
    (tmp_path / JOURNAL_ROOT / "old" / "default" / ".nfs0001").touch()
    assert (tmp_path / JOURNAL_ROOT / "snakemake-1-1" / "default" / "train@1").stat().st_size == 0
    journal = read_journal(tmp_path)
    expected = {"download", "preprocess_shard@001", "preprocess", "train@1", "masks_shard@000"}
    assert journal.ran("default") == expected and journal.ran("tps") == {"train@0"}
    clear(journal)
    assert read_journal(tmp_path).entries == frozenset() and not list((tmp_path / JOURNAL_ROOT).iterdir())
    assert read_journal(tmp_path / "nowhere").entries == frozenset()


def test_a_stage_run_by_the_cli_notes_itself_only_when_it_completes(tmp_path, monkeypatch):
    from cpabanim.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("experiment: default\nseeds: [0]\ntracking: {enabled: false}\n")
    monkeypatch.setenv(JOURNAL_ENV, str(JOURNAL_ROOT / "run"))
    assert main(["preprocess"]) == 1  # no raw data yet: refused before any work, nothing noted
    assert read_journal(tmp_path).entries == frozenset()
    assert main(["download"]) == 0  # the synthetic source: a manifest only
    assert read_journal(tmp_path).entries == {("default", "download")}


def make_outputs(params: dict) -> None:
    """Every input and output of every stage, for each seed of ``params`` (relative to the current folder): its
    folders, and a sharded stage's shard folders and index files."""
    for stage in all_stages().values():
        for seed in run_seeds(params):
            run = {**params, "seed": seed}
            io = stage_io(stage, run, [params["experiment"]] if stage.aggregate else None)
            for path in [*io.inputs.values(), *io.outputs.values()]:
                path.mkdir(parents=True, exist_ok=True)
            if stage.shards:
                out = stage.shard_output
                for k in range(int(flatten(params)[stage.shards])):
                    Path(expand(out.shard_path(f"{k:03d}"), run)).mkdir(parents=True, exist_ok=True)
                for name in out.gathered:
                    Path(expand(f"{out.path}/{name}", run)).touch()


def test_only_the_stages_that_ran_are_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("experiment: default\nseeds: [0, 1]\ndata: {shards: 2}\n")
    params = load_params(tmp_path / "params.yaml")
    make_outputs(params)

    def recorded(ran: set[str], experiments=("default",), run: dict | None = None) -> list[str]:
        return record.stages_to_record(run or params, list(experiments), params, ran)

    ran = {"preprocess", "preprocess_shard@001", "preprocess_shard@000", "train@0", "train@1", "report"}
    in_order = ["params", "preprocess_shard@000", "preprocess_shard@001", "preprocess", "train@0", "train@1", "report"]
    assert recorded(ran) == in_order  # dvc.yaml's order
    # a per-experiment sharded stage: every seed's shards (dvc.yaml's matrix), then the seeds' gathers (its loop), as
    # `dvc stage list` lists them
    evaluated = {"evaluate_shard@1-000", "evaluate_shard@0-000", "evaluate@0", "evaluate@1"}
    assert recorded(evaluated) == ["params", "evaluate_shard@0-000", "evaluate_shard@1-000", "evaluate@0", "evaluate@1"]
    assert recorded(set()) == ["params"]  # a run that ran nothing
    # a seed or shard beyond params.yaml's has no stage in dvc.yaml; a report of other seeds or experiments is not
    # dvc.yaml's
    assert recorded({"train@5", "preprocess_shard@002", "evaluate@1"}) == ["params", "evaluate@1"]
    assert recorded({"report"}, experiments=["tps"]) == ["params"]
    assert recorded({"report"}, run={**params, "seeds": [0]}) == ["params"]
    # a stage whose files are not all there is not recorded: a shard without its folder, a gather without its index
    shutil.rmtree(tmp_path / params["paths"]["processed"] / "shards" / "001")
    assert recorded({"preprocess_shard@000", "preprocess_shard@001"}) == ["params", "preprocess_shard@000"]
    (tmp_path / params["paths"]["processed"] / "manifest.json").unlink()
    assert recorded({"preprocess", "download"}) == ["params", "download"]


@pytest.fixture
def fake_dvc(tmp_path, monkeypatch) -> Path:
    """A `dvc` on PATH that writes its arguments to ``tmp_path/dvc.args`` (and fails while ``tmp_path/dvc.fail``
    exists)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "dvc"
    fail = f'[ -e {tmp_path}/dvc.fail ] && {{ echo "ERROR: no" >&2; exit 1; }}'
    script.write_text(f'#!/bin/sh\n{fail}\necho "$@" > {tmp_path}/dvc.args\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "dvc.args"


def record_args(root: Path, experiments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    record.add_arguments(parser)
    return parser.parse_args(["--params", str(root / "params.yaml"), "--experiments", experiments])


def test_record_commits_the_journals_stages_and_removes_the_journal(tmp_path, monkeypatch, fake_dvc):
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    (root / ".dvc").mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("experiment: default\nseeds: [0, 1]\n")
    make_outputs(load_params(root / "params.yaml"))
    stages = all_stages()
    environ = {JOURNAL_ENV: str(JOURNAL_ROOT / "run")}
    note_completed(stages["masks"], {"experiment": "default", "seed": 0}, gather=True, environ=environ)
    for experiment, seed in (("default", 1), ("tps", 0)):
        note_completed(stages["train"], {"experiment": experiment, "seed": seed}, environ=environ)
    (tmp_path / "dvc.fail").touch()
    with pytest.raises(Exception, match="dvc commit params masks train@1 failed: ERROR: no"):
        record.run(record_args(root, "default,tps"))
    assert read_journal(root).ran("default") == {"masks", "train@1"}  # kept for the next successful run
    (tmp_path / "dvc.fail").unlink()
    assert record.run(record_args(root, "default,tps")) == 0
    assert fake_dvc.read_text().split() == ["commit", "--force", "--quiet", "params", "masks", "train@1"]
    assert (root / "params.resolved.yaml").is_file() and read_journal(root).entries == frozenset()
    # the next run ran nothing (`snakemake --touch`, say): only the params
    assert record.run(record_args(root, "default,tps")) == 0
    assert fake_dvc.read_text().split() == ["commit", "--force", "--quiet", "params"]
