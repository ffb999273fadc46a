"""Which stages a Snakemake invocation ran: the journal ``cpabanim record`` reads (docs/pipeline.md, "One record").

The Snakefile names one folder per invocation in ``CPABANIM_JOURNAL`` (``.snakemake/cpabanim/ran/<run id>``,
relative to the project root, where every job runs) and exports it to its jobs. When a pipeline stage completes,
the CLI leaves an empty file there, ``<experiment>/<dvc stage name>`` (``default/train@0``,
``default/preprocess_shard@003``, ``default/preprocess``, ``default/reconstruct_shard@0-003``):
one file per completed stage, created in one call and never written to, so jobs on several machines that share the
project folder (SLURM over NFS) never append to the same file, a job killed while noting leaves nothing half-written,
and a job that runs again (a retry) makes the same file again. Outside Snakemake (``dvc repro``, a stage by hand)
the variable is unset and nothing is noted: DVC records its own runs.

``cpabanim record`` (the Snakefile's ``onsuccess``) reads every invocation's folder, this one's and what a failed
invocation left (its completed stages were never recorded), commits those stages and removes the folders.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpabanim.config.mappings import flatten
from cpabanim.data.layout import shard_name
from cpabanim.pipeline.base import Stage

log = logging.getLogger(__name__)

JOURNAL_ENV = "CPABANIM_JOURNAL"
JOURNAL_ROOT = Path(".snakemake") / "cpabanim" / "ran"


def dvc_stage_name(stage: Stage, params: Mapping[str, Any], shard: int | None = None) -> str:
    """The dvc.yaml stage that a run of ``stage`` with ``params`` is (as ``cpabanim dag`` names them): ``train@0``
    for a per-experiment stage (dvc.yaml loops over the seeds, ``train@<seed>``), ``preprocess_shard@003`` for
    shard 3 of a sharded stage (a loop over the shards), the stage's name for a shared stage, a sharded stage's
    gather or the report; ``reconstruct_shard@0-003`` for shard 3 of seed 0 of a per-experiment sharded stage (a
    matrix over the seeds and the shards). The one place that makes these names."""
    if shard is not None:
        seed = f"{int(params['seed'])}-" if stage.per_experiment else ""
        return f"{stage.name}_shard@{seed}{shard_name(int(shard))}"
    if stage.per_experiment:
        return f"{stage.name}@{int(params['seed'])}"
    return stage.name


def shard_count(stage: Stage, params: Mapping[str, Any]) -> int:
    """How many shards a sharded stage runs as with ``params`` (its count key: ``data.shards``); 0 when unsharded."""
    return int(flatten(params)[stage.shards]) if stage.shards else 0


def completed_names(
    stage: Stage, params: Mapping[str, Any], shard: int | None = None, gather: bool = False
) -> list[str]:
    """The dvc.yaml stages one ``cpabanim <stage>`` run completes: its own; a sharded stage run without ``--shard``
    or ``--gather`` (by hand) runs every shard, then the gather."""
    if stage.shards and shard is None and not gather:
        return [
            *(dvc_stage_name(stage, params, k) for k in range(shard_count(stage, params))),
            dvc_stage_name(stage, params),
        ]
    return [dvc_stage_name(stage, params, shard)]


def note_completed(
    stage: Stage,
    params: Mapping[str, Any],
    shard: int | None = None,
    gather: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> list[Path]:
    """Note in the invocation's journal that ``stage`` completed for the experiment and seed of ``params`` (the
    shard, for a shard job); the entries made, none outside a Snakemake job. A journal that cannot be written costs
    a warning, never the stage: its work is done (``dvc commit <stage>`` records it by hand)."""
    folder = environ.get(JOURNAL_ENV)
    if not folder:
        return []
    entries = [
        Path(folder) / str(params["experiment"]) / name for name in completed_names(stage, params, shard, gather)
    ]
    try:
        for entry in entries:
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.touch()
    except OSError as err:
        log.warning("could not note %s in the run's journal (%s): `cpabanim record` will not commit it", entry, err)
        return []
    return entries


@dataclass(frozen=True)
class Journal:
    """What the journal folders under ``.snakemake/cpabanim/ran`` say: (experiment, dvc stage name) pairs."""

    folders: tuple[Path, ...]
    entries: frozenset[tuple[str, str]]

    def ran(self, experiment: str) -> set[str]:
        """The dvc stage names that completed for ``experiment``."""
        return {name for exp, name in self.entries if exp == experiment}


def read_journal(root: Path) -> Journal:
    """Every invocation's journal in the project at ``root``; hidden names (a file system's leftovers) skipped."""
    base = Path(root) / JOURNAL_ROOT
    folders = tuple(sorted(p for p in base.iterdir() if p.is_dir())) if base.is_dir() else ()
    entries = {
        (experiment.name, entry.name)
        for folder in folders
        for experiment in folder.iterdir()
        if experiment.is_dir() and not experiment.name.startswith(".")
        for entry in experiment.iterdir()
        if entry.is_file() and not entry.name.startswith(".")
    }
    return Journal(folders, frozenset(entries))


def clear(journal: Journal) -> None:
    """Remove the folders ``journal`` was read from (once what they say is recorded)."""
    for folder in journal.folders:
        shutil.rmtree(folder, ignore_errors=True)
