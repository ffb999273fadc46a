"""What a run records about where it came from: the pipeline invocation it belongs to, the git commit, the DVC
lock hashes, the processed data and the device.

Which invocation a stage belongs to is found in this order:

1. ``CPABANIM_PIPELINE_RUN`` in the environment (the Snakefile sets it once per invocation; export it yourself
   to group several invocations under one parent);
2. the nearest ancestor process that is ``dvc`` or ``snakemake`` (``dvc repro`` sets no per-invocation
   variable, but every stage command is its child process);
3. otherwise the stage process itself (a stage run by hand is its own pipeline).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cpabanim.config.mappings import flatten

PIPELINE_RUN_ENV = "CPABANIM_PIPELINE_RUN"
TAG_EXPERIMENT = "cpabanim.experiment"
TAG_SEED = "cpabanim.seed"  # the training seed of a run: runs of one experiment differ only in it
TAG_PID = "cpabanim.pid"
TAG_HOST = "cpabanim.host"
TAG_ROLE = "cpabanim.role"  # "pipeline" on parents, "stage" on children
TAG_PIPELINE = "cpabanim.pipeline_id"
TAG_STAGE = "cpabanim.stage"
TAG_PROCESSED_SHA256 = "data.processed.sha256"  # the processed data's hash (of its manifest.json)
MANIFEST_NAME = "manifest.json"  # written by preprocess: every video with its pixel sha256 (docs/data.md)
DIGEST_LENGTH = 32  # MLflow stores a dataset digest in 36 characters at most: the hash's first 32 hex digits


_ORCHESTRATORS = ("snakemake", "dvc")


_PROCESS_START = int(time.time())


def _process_info(pid: int) -> tuple[int, list[str], str] | None:
    """(parent pid, argv, start time in clock ticks) of a process, from /proc; None where unavailable."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after its closing parenthesis
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), [a.decode(errors="replace") for a in argv if a], fields[19]


def _orchestrator_of(argv: list[str]) -> str | None:
    for arg in argv[:3]:
        name = Path(arg).name
        if name in _ORCHESTRATORS:
            return name
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] in _ORCHESTRATORS:
        return argv[2]
    return None


def pipeline_id() -> str:
    """A stable id of the current pipeline invocation (see the module docstring)."""
    explicit = os.environ.get(PIPELINE_RUN_ENV)
    if explicit:
        return explicit
    pid = os.getppid()
    for _ in range(12):  # a few shells / wrappers between the orchestrator and the stage at most
        info = _process_info(pid)
        if info is None:
            break
        parent, argv, started = info
        tool = _orchestrator_of(argv)
        if tool:
            return f"{tool}-{pid}-{started}"
        if parent <= 1:
            break
        pid = parent
    return f"manual-{os.getpid()}-{_PROCESS_START}"


def orchestrator_of(pipeline: str) -> str:
    head = pipeline.split("-", 1)[0]
    return head if head in (*_ORCHESTRATORS, "manual") else "custom"


def git_tags(cwd: str | Path = ".") -> dict[str, str]:
    """``git.commit`` and ``git.dirty`` (tracked files modified), or nothing outside a git work tree."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=20
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git.commit": commit, "git.dirty": str(dirty).lower()}


def source_tags(pipeline: str) -> dict[str, str]:
    """MLflow's own source, user and git tags (``mlflow.source.*``, ``mlflow.user``) for a run created with the
    client, which sets none of them (``mlflow.start_run`` does): the UI's Source and User columns read them. The
    source is the orchestrator of ``pipeline``, or the command line of a stage run by hand."""
    import getpass

    orchestrator = orchestrator_of(pipeline)
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]]) if sys.argv and sys.argv[0] else "cpabanim"
    tags = {
        "mlflow.source.name": orchestrator if orchestrator in _ORCHESTRATORS else command,
        "mlflow.source.type": "LOCAL",
    }
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment nor the password database
        pass
    git = git_tags()
    if "git.commit" in git:
        tags["mlflow.source.git.commit"] = git["git.commit"]
    tags.update({f"mlflow.source.git.{key}": value for key, value in _git_origin().items()})
    return tags


def _git_origin(cwd: str | Path = ".") -> dict[str, str]:
    """``branch`` and ``repoURL`` (the ``origin`` remote) of the work tree, where git knows them."""
    found = {}
    for key, args in (("branch", ["rev-parse", "--abbrev-ref", "HEAD"]), ("repoURL", ["remote", "get-url", "origin"])):
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.stdout.strip() and out.stdout.strip() != "HEAD":
            found[key] = out.stdout.strip()
    return found


def processed_sha256(processed: str | Path) -> str | None:
    """The processed data's hash: the sha256 of its ``manifest.json``, which lists every video with the sha256
    of its pixels, so the hash changes exactly when a frame does (reading the manifest, not gigabytes of frames).
    None before preprocess has written it."""
    manifest = Path(processed) / MANIFEST_NAME
    if not manifest.is_file():
        return None
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def dvc_lock_tags(lock_path: str | Path = "dvc.lock") -> dict[str, str]:
    """``dvc.<stage>.<out>`` = md5 of each output recorded in dvc.lock (data and model versions; ``train@0`` is
    ``dvc.train.0.<out>``)."""
    from cpabanim.config.mappings import yaml_load

    path = Path(lock_path)
    if not path.is_file():
        return {}
    try:
        lock = yaml_load(path.read_text()) or {}
    except Exception:  # a half-written lock file must never fail a stage
        return {}
    tags = {}
    for stage, entry in (lock.get("stages") or {}).items():
        for out in entry.get("outs") or []:
            digest = out.get("md5") or out.get("hash")
            if digest and out.get("path"):
                # MLflow refuses a tag key with '@' (train@0, preprocess_shard@003): the loop item after a '.'
                tags[f"dvc.{stage.replace('@', '.')}.{out['path']}"] = str(digest)
    return tags


def dataset_tags(params: dict[str, Any]) -> dict[str, str]:
    """Clip counts per split of the processed dataset (each metric should be read next to them)."""
    root = Path(params["paths"]["processed"])
    tags = {}
    index = root / MANIFEST_NAME  # the processed data's index lists every clip of each split
    try:
        videos = json.loads(index.read_text()).get("videos", {}) if index.is_file() else {}
    except (OSError, ValueError, AttributeError):  # a half-written index must never fail a stage
        videos = {}
    for split in ("train", "test"):
        if isinstance(videos.get(split), dict):
            tags[f"data.clips.{split}"] = str(len(videos[split]))
    source = params["data"]["source"]
    if source:
        tags["data.source"] = str(source)
    digest = processed_sha256(root)
    if digest:
        tags[TAG_PROCESSED_SHA256] = digest
    return tags


def resolved_device(params: dict[str, Any]) -> str:
    from cpabanim.runtime import resolve_device

    return str(resolve_device(params["device"]))


def run_tags(params: dict[str, Any], device: bool = True) -> dict[str, str]:
    """Everything that identifies what a run ran on: code, data, device, preset. ``device=False``: a stage that
    runs on no torch device (download, preprocess, the report) gets no ``device`` tag, and its job does not import
    torch to work one out (2-3 s of every such job's start)."""
    tags = {**git_tags(), **dataset_tags(params)}
    if device:
        tags["device"] = resolved_device(params)
    tags["preset"] = str(params["preset"] or "default")
    tags[TAG_EXPERIMENT] = str(params["experiment"])
    if os.environ.get("DVC_STAGE"):  # under `dvc repro`: dvc.lock describes this run's data and model
        tags.update(dvc_lock_tags())
    return tags


def param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


def flat_params(params: dict[str, Any]) -> dict[str, str]:
    return {k: param_value(v) for k, v in flatten(params).items()}
