"""Code dependencies as fine as the code (issue 33).

Each stage depends on the module files it imports, transitively (cpabanim/pipeline/code.py), not on whole
packages: a module only training reads never re-runs the data stages. The real tools' view is checked on the tiny
pipeline's finished runs (tests/pipeline/test_e2e.py: a code edit).
"""

from __future__ import annotations

from pathlib import Path

from cpabanim.pipeline import all_stages
from cpabanim.pipeline.code import NOT_OUTPUTS, PACKAGE_ROOT, imported_closure, stage_code

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
    """Logging, progress bars, the version and the dependency finder: editing them re-runs nothing.
    The MLflow modules the report reads its runs with stay its dependencies."""
    listed = {path for stage in all_stages().values() for path in stage.code}
    for module in NOT_OUTPUTS:
        relative = module.replace(".", "/")
        assert not {f"{relative}.py", f"{relative}/__init__.py"} & listed, module
    assert {"cpabanim/tracking/runs.py", "cpabanim/tracking/store.py"} <= set(all_stages()["report"].code)
    # and the list does not hide a module the stages read: each one is imported, so each one must exist
    assert all(stage_code(f"cpabanim.pipeline.{name}") for name in all_stages())
