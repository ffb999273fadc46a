"""Helpers of the pipeline tests: a throw-away copy of the project's pipeline files, and the tools on PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import PROJECT_ROOT

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PIPELINE_FILES = [
    "cpabanim",  # the code is a dependency of the stages: each copy runs (and hashes) its own package
    "workflow",
    "dvc.yaml",
    ".dvcignore",
    "params.yaml",
    "params.resolved.yaml",
    "presets",
    "experiments",
]


def tool_env(root: Path | None = None) -> dict[str, str]:
    """The environment the orchestrators run in: the venv's tools first, one thread, offline, no analytics; in a
    copied project, its own copy of the package first (an edit there is what runs)."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if root is not None and (root / "cpabanim").is_dir():
        env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        DVC_NO_ANALYTICS="1",
        PYTHONHASHSEED="0",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
    )
    for name in ("MLFLOW_TRACKING_URI", "CPABANIM_PIPELINE_RUN", "CPABANIM_JOURNAL", "DVC_STAGE", "DVC_ROOT"):
        env.pop(name, None)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=tool_env(cwd), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def copy_project(dest: Path) -> Path:
    """Copy the pipeline files (not the package: the installed one is used) into ``dest``, a new git+DVC repo."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        src = PROJECT_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    (dest / ".gitignore").write_text(
        "/data/\n/models/\n/outputs/*\n!/outputs/*/\n/outputs/*/*\n!/outputs/*/seed*/\n/outputs/*/seed*/*\n"
        "!/outputs/*/seed*/metrics.json\n/logs/\n/mlflow.db*\n/mlruns/\n"
        "/.snakemake/\n/.cpabanim/\n/dvc_plots/\n"
    )
    run(["git", "init", "-q", "-b", "main"], dest)
    run([str(BIN / "dvc"), "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "pipeline"], dest)
    return dest


def stages_of(tool: str, root: Path) -> dict:
    out = run([sys.executable, str(HERE / "dag.py"), tool, str(root)], root)
    return json.loads(out.stdout)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def demo_inputs(processed: Path, folder: Path) -> tuple[Path, Path, int]:
    """A processed test video to drive the demo (its frame archive), its first frame written as the photo into
    ``folder``, and its frame count."""
    from cpabanim.data.archive import FrameArchive
    from cpabanim.data.layout import split_videos

    video = next(iter(split_videos(processed, "test").values()))
    source = folder / f"{video.stem}.source.png"
    folder.mkdir(parents=True, exist_ok=True)
    with FrameArchive(video) as frames:
        source.write_bytes(frames.png(0))
        return source, video, len(frames)
