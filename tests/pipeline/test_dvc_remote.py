"""A DVC remote round trip: what one checkout ran and pushed, a fresh clone pulls and takes as done.

The checkout is tests/pipeline/test_e2e.py's `dvc repro` run (the tiny pipeline, two seeds), which calls
`check_a_fresh_clone_pulls_and_reruns_nothing` from its own test: the run is made once for both. `dvc.lock` and
the `cache: false` outputs (DVC leaves those to git) are committed, the cached ones pushed to a local-folder remote.
A fresh `git clone` with the same remote pulls them: `dvc status` is clean; Snakemake, which has no metadata in a
fresh clone and decides by the mtimes the checkout happened to give, plans nothing once `snakemake --touch` has set
them in the DAG's order (it touches, never runs: the checkpoint's bytes stay those that were pushed); `cpabanim
demo` animates with the pulled checkpoint. A remote that refuses the push fails with one line naming its folder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..services.disks import read_only_folder
from .conftest import BIN, demo_inputs, run

REMOTE = "store"
CHECKPOINT = Path("models/checkpoints/default/seed0/last.pt")
UP_TO_DATE = "Data and pipelines are up to date."
# the reasons Snakemake gives when only the mtimes of a checkout are out of order: nothing missing, nothing changed
MTIME_REASONS = ("Updated input files", "Input files updated by another job")


def dvc(*args: str) -> list[str]:
    return [str(BIN / "dvc"), *args]


def snakemake(*args: str) -> list[str]:
    return [str(BIN / "snakemake"), "--cores", "1", *args]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def uncached_outputs(root: Path) -> list[str]:
    """The outputs dvc.yaml marks ``cache: false``: DVC neither caches nor pushes them, so a clone has them only when
    git holds them (the project's .gitignore leaves most of them out: a clone then finds them deleted)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return sorted(str(out.def_path) for out in repo.index.outs if not out.use_cache)


def share(root: Path) -> None:
    """Commit what a `dvc repro` run made as a user would share it: dvc.lock and the outputs git must hold."""
    run(["git", "add", "dvc.lock"], root)
    run(["git", "add", "-f", *uncached_outputs(root)], root)
    run(["git", "commit", "-q", "-m", "results"], root)


def add_remote(root: Path, url: Path, name: str = REMOTE) -> None:
    """The remote as each checkout's own default (``--local``: .dvc/config.local, not committed)."""
    run(dvc("remote", "add", "--local", "-d", name, str(url)), root)


def plan(root: Path) -> str:
    out = run(snakemake("-n"), root)
    return out.stdout + out.stderr


def check_a_fresh_clone_pulls_and_reruns_nothing(root: Path, tmp_path: Path) -> None:
    """``root``: a checkout whose `dvc repro` ran the whole pipeline (tests/pipeline/test_e2e.py)."""
    share(root)
    remote = tmp_path / "remote"
    add_remote(root, remote)
    pushed = run(dvc("push"), root).stdout
    assert re.search(r"\d+ files? pushed", pushed), pushed

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    add_remote(clone, remote)
    pulled = run(dvc("pull"), clone).stdout
    assert re.search(r"\d+ files? fetched", pulled), pulled
    assert sha256(clone / CHECKPOINT) == sha256(root / CHECKPOINT), "the checkpoint is pushed and pulled"
    status = run(dvc("status"), clone).stdout.strip()
    assert status == UP_TO_DATE, f"after `dvc pull` in a fresh clone:\n{status}"

    # Snakemake's view of the pulled files: only their mtimes can be out of order (the checkout's), never a missing
    # output or a changed parameter or code (a fresh clone has no metadata to compare)
    reasons = re.findall(r"^\s*reason: (.*)$", plan(clone), re.M)
    assert all(part.startswith(MTIME_REASONS) for reason in reasons for part in reason.split("; ")), reasons
    run(snakemake("--touch"), clone)
    after = plan(clone)
    assert "Nothing to be done" in after, after[-3000:]
    # the touch's `cpabanim record` (the Snakefile's onsuccess) recorded the same hashes: nothing to commit
    changed = run(["git", "status", "--porcelain"], clone).stdout.strip()
    assert not changed, f"`snakemake --touch` changed the checkout:\n{changed}\n{run(['git', 'diff'], clone).stdout}"
    assert run(dvc("status"), clone).stdout.strip() == UP_TO_DATE
    assert sha256(clone / CHECKPOINT) == sha256(root / CHECKPOINT), "nothing was trained again"
    # every stage opens an MLflow run in the project's store and writes its log; --touch only leaves empty logs
    assert not (clone / "mlflow.db").exists(), "a stage ran"
    assert not [log for log in (clone / "logs").rglob("*.log") if log.stat().st_size], "a stage ran"

    from cpabanim.data.video import read_video

    source, video, count = demo_inputs(clone / "data" / "processed", tmp_path)
    out = tmp_path / "demo.mp4"
    demo = ["demo", "--source", str(source), "--driving", str(video), "--out", str(out)]
    run([str(BIN / "cpabanim"), *demo, "--crop", "none", "--device", "cpu"], clone)
    assert read_video(out).shape[0] == count


def test_a_remote_that_refuses_the_push_fails_naming_its_folder(tmp_path: Path):
    root = tmp_path / "project"
    root.mkdir()
    run(["git", "init", "-q", "-b", "main"], root)
    run(dvc("init", "-q"), root)
    (root / "data.txt").write_text("what the pipeline made\n")
    run(dvc("add", "-q", "data.txt"), root)
    remote = tmp_path / "read-only"
    with read_only_folder(remote):
        add_remote(root, remote, name="shared")
        refused = run(dvc("push"), root, check=False)
    assert refused.returncode != 0, refused.stdout
    errors = [line for line in refused.stderr.splitlines() if line.startswith("ERROR:")]
    # DVC names the folder it could not write (Errno 13 as a user, Errno 1 for an immutable folder as root)
    assert len(errors) == 1, refused.stderr
    assert re.search(rf"(Permission denied|Operation not permitted): '{re.escape(str(remote))}", errors[0]), errors
