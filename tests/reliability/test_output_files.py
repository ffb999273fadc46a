"""Output files the CLI names are replaced only where cpabanim wrote them (issue 24, docs/reliability.md "Never
overwrite"): the resolved parameters of ``cpabanim params --write``. The demo's ``--out`` is in tests/test_demo.py,
``import-checkpoint --output`` in tests/test_import_checkpoint.py."""

from __future__ import annotations

import logging
import shutil

from cpabanim import cli
from tests.conftest import PROJECT_ROOT


def test_params_write_never_replaces_a_file_it_did_not_write(tmp_path, caplog):
    params = tmp_path / "params.yaml"
    shutil.copy(PROJECT_ROOT / "params.yaml", params)
    kept = params.read_bytes()
    assert cli.main(["params", "--params", str(params), "--write", str(params)]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"--write {params} exists and cpabanim did not write it" in errors[0], errors
    assert params.read_bytes() == kept
    resolved = tmp_path / "params.resolved.yaml"
    for _ in range(2):  # what it wrote, it rewrites
        command = ["params", "--params", str(params), "--set", "train.max_steps=7", "--write", str(resolved)]
        assert cli.main(command) == 0
    assert "max_steps: 7" in resolved.read_text()
