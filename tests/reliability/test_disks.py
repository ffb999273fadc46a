"""A real full disk and a real read-only folder under a stage's outputs (issue 24): one line naming the path, a
non-zero exit, nothing of what was there lost, and the same stage runs once there is room again.

The stage is ``cpabanim reconstruct`` with the identity animator (no model needed) on tiny synthetic data, its
``paths.outputs`` on a 32 KB tmpfs or on a folder no one may write to (tests/services/disks.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cpabanim.files import sha256_file
from tests.conftest import PROJECT_ROOT
from tests.services.disks import full_file_system, read_only_folder

TINY = [
    "--set",
    "tracking.enabled=false",
    "--set",
    "data.frame_size=64",
    "--set",
    "data.synthetic={num_train: 2, num_test: 2, num_frames: 8}",
    "--set",
    "reconstruct.animator=identity",
]


def cpabanim(project: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cpabanim", *args[:1], "--params", "params.yaml", *TINY, *args[1:]]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder with the project's params.yaml whose tiny data stages have run."""
    root = tmp_path_factory.mktemp("disks")
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    for stage in ("download", "preprocess"):
        assert cpabanim(root, stage).returncode == 0
    (root / "models" / "checkpoints" / "default" / "avd" / "seed0").mkdir(parents=True)  # declared; identity reads none
    return root


def processed_digest(project: Path) -> dict[str, str]:
    folder = project / "data" / "processed"
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if ": error: " in line or "Traceback" in line]
    assert result.returncode != 0 and len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_a_stage_on_a_full_or_read_only_disk_is_one_line_naming_the_path(project, tmp_path, disk):
    before = processed_digest(project)
    full = disk == "full"
    with full_file_system(tmp_path / "small", size_kb=32) if full else read_only_folder(tmp_path / "ro") as outputs:
        result = cpabanim(project, "reconstruct", "--set", f"paths.outputs={outputs}")
        line = one_error_line(result)
        assert str(outputs) in line, line
        causes = ["No space left on device"] if full else ["Operation not permitted", "Permission denied"]
        assert any(cause in line for cause in causes), line
        if full:  # the frame folder being written is removed whole; a re-run clears the rest (fresh_output_folder)
            assert not list(outputs.rglob("*.png")), sorted(outputs.rglob("*"))
    assert processed_digest(project) == before  # the inputs are untouched
    again = cpabanim(project, "reconstruct", "--set", f"paths.outputs={tmp_path / 'roomy'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert any((tmp_path / "roomy").rglob("*.png"))
