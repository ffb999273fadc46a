"""A study writes to its own folders, which dvc.yaml does not describe: with CPABANIM_RECORD=0 (what
workflow/studies/synthetic_motion.sh sets) the Snakefile's `cpabanim record` leaves dvc.lock and
params.resolved.yaml alone, and still clears the run's journal."""

from __future__ import annotations

import argparse
import os

from cpabanim.commands import record
from cpabanim.pipeline import all_stages
from cpabanim.pipeline.journal import JOURNAL_ENV, JOURNAL_ROOT, note_completed, read_journal


def test_record_off_commits_nothing_and_clears_the_journal(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / ".dvc").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "params.yaml").write_text("experiment: default\nseeds: [0]\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(f"#!/bin/sh\ntouch {tmp_path}/dvc.called\n")
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(root)
    environ = {JOURNAL_ENV: str(JOURNAL_ROOT / "run")}
    note_completed(all_stages()["train"], {"experiment": "default", "seed": 0}, environ=environ)
    assert read_journal(root).ran("default") == {"train@0"}
    parser = argparse.ArgumentParser()
    record.add_arguments(parser)
    monkeypatch.setenv(record.RECORD_ENV, "0")
    assert record.run(parser.parse_args(["--params", str(root / "params.yaml"), "--experiments", "default"])) == 0
    assert not (tmp_path / "dvc.called").exists() and not (root / "params.resolved.yaml").exists()
    assert read_journal(root).entries == frozenset()
