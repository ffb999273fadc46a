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
from pathlib import Path

import pytest

from cpabanim.commands import record
from cpabanim.config.layers import load_params
from cpabanim.pipeline import all_stages, run_seeds, stage_io
from cpabanim.pipeline.code import NOT_OUTPUTS, PACKAGE_ROOT, imported_closure
from cpabanim.pipeline.journal import JOURNAL_ENV, JOURNAL_ROOT, clear, dvc_stage_name, note_completed, read_journal

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
    assert dvc_stage_name(stages["preprocess"], {"seed": 3, "experiment": "default"}) == "preprocess"
    assert dvc_stage_name(stages["report"], {"seed": 0, "experiment": "default"}) == "report"


def test_a_completed_stage_is_one_empty_file_per_stage_in_its_invocations_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stages = all_stages()
    assert note_completed(stages["train"], {"seed": 0, "experiment": "default"}, environ={}) is None  # no Snakemake
    assert not (tmp_path / ".snakemake").exists()
    environ = {JOURNAL_ENV: str(JOURNAL_ROOT / "snakemake-1-1")}
    note_completed(stages["preprocess"], {"seed": 0, "experiment": "default"}, environ)
    note_completed(stages["train"], {"seed": 1, "experiment": "default"}, environ)
    note_completed(stages["train"], {"seed": 1, "experiment": "default"}, environ)  # a retry: the same file
    note_completed(stages["train"], {"seed": 0, "experiment": "tps"}, environ)
    # a failed invocation's leftovers (never recorded) and a file system's hidden leftover, skipped
    note_completed(stages["masks"], {"seed": 0, "experiment": "default"}, {JOURNAL_ENV: str(JOURNAL_ROOT / "old")})
    (tmp_path / JOURNAL_ROOT / "old" / "default" / ".nfs0001").touch()
    assert (tmp_path / JOURNAL_ROOT / "snakemake-1-1" / "default" / "train@1").stat().st_size == 0
    journal = read_journal(tmp_path)
    assert journal.ran("default") == {"preprocess", "train@1", "masks"} and journal.ran("tps") == {"train@0"}
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
    """Every input and output path of every stage, for each seed of ``params`` (relative to the current folder)."""
    for stage in all_stages().values():
        for seed in run_seeds(params):
            io = stage_io(stage, {**params, "seed": seed}, [params["experiment"]] if stage.aggregate else None)
            for path in [*io.inputs.values(), *io.outputs.values()]:
                path.mkdir(parents=True, exist_ok=True)


def test_only_the_stages_that_ran_are_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("experiment: default\nseeds: [0, 1]\n")
    params = load_params(tmp_path / "params.yaml")
    make_outputs(params)
    every = record.stages_to_record(params, ["default"], [0, 1], {"preprocess", "train@0", "train@1", "report"})
    assert every == ["params", "preprocess", "train@0", "train@1", "report"]  # dvc.yaml's order
    assert record.stages_to_record(params, ["default"], [0, 1], set()) == ["params"]  # a run that ran nothing
    # a seed beyond params.yaml's has no stage in dvc.yaml; a report of other seeds or experiments is not dvc.yaml's
    assert record.stages_to_record(params, ["default"], [0, 1], {"train@5", "evaluate@1"}) == ["params", "evaluate@1"]
    assert record.stages_to_record(params, ["tps"], [0, 1], {"report"}) == ["params"]
    assert record.stages_to_record({**params, "seeds": [0]}, ["default"], [0, 1], {"report"}) == ["params"]
    # a stage whose files are not all there is not recorded
    (tmp_path / params["paths"]["masks"]).rmdir()
    assert record.stages_to_record(params, ["default"], [0, 1], {"preprocess", "masks"}) == ["params", "preprocess"]


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
    for stage, experiment, seed in (("masks", "default", 0), ("train", "default", 1), ("train", "tps", 0)):
        note_completed(stages[stage], {"experiment": experiment, "seed": seed}, environ)
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
