"""`pip install cpabanim` into an environment that already has torch keeps that torch.

A cluster image ships its own CUDA build of torch; pyproject.toml gives torch and torchvision ranges (not pins) so
that installing the package never replaces them. The check is pip's own plan: a dry run with a JSON report
(``--report``) in this environment, which has the tested pair, must install neither. It runs without the network:
``--no-index`` resolves against what is installed (``--no-build-isolation``: building the metadata needs no
download either); only when a dependency is missing here does it ask the package index, and it skips, saying why,
when the index cannot be reached.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from .conftest import PROJECT_ROOT

KEPT = ("torch", "torchvision")
# what pip prints when it cannot reach an index (DNS, refused, timeout, proxy)
UNREACHABLE = re.compile(r"NewConnectionError|Name or service not known|Connection refused|timed out|ProxyError", re.I)


def dry_run(report: Path, offline: bool) -> subprocess.CompletedProcess:
    """pip's plan for installing the project here, written to ``report``; offline: installed distributions only."""
    network = ["--no-index"] if offline else ["--timeout", "15", "--retries", "1"]
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-build-isolation"]
    command += [*network, "--report", str(report), str(PROJECT_ROOT)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def planned_installs(tmp_path: Path) -> dict[str, str]:
    """name -> version of every distribution pip would install (the project itself included)."""
    report = tmp_path / "report.json"
    result = dry_run(report, offline=True)
    missing = re.search(r"No matching distribution found for ([A-Za-z0-9._-]+)", result.stderr)
    if result.returncode != 0 and missing and missing.group(1).lower() not in KEPT:
        # a dependency this environment lacks: only the index can say what pip would pick, torch included
        result = dry_run(report, offline=False)
        if result.returncode != 0 and UNREACHABLE.search(result.stderr):
            pytest.skip(f"{missing.group(1)} is not installed here and the package index is unreachable")
    assert result.returncode == 0, f"pip's dry run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    installs = json.loads(report.read_text())["install"]
    return {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in installs}


def test_installing_the_package_keeps_the_installed_torch(tmp_path: Path):
    planned = planned_installs(tmp_path)
    assert "cpabanim" in planned, planned  # the plan is the project's
    installed = {name: version(name) for name in KEPT}
    replaced = {name: planned[name] for name in KEPT if name in planned}
    assert not replaced, f"pip would replace the installed {installed} with {replaced}: widen the ranges"
