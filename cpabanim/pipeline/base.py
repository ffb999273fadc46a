"""What a pipeline stage is: one declaration (parameters it reads, inputs, outputs) and one function.

Both orchestrators' files (``workflow/rules/*.smk``, ``dvc.yaml``) are generated from these declarations
(``cpabanim dag --write``), and the CLI hands each stage only the parameters it declares, so the files cannot
drift from what the code reads (docs/pipeline.md, "Stages").

Path templates name parameters in braces: ``{paths.processed}``, ``{data.source}``; ``{experiment}`` and ``{seed}`` mark
a per-experiment path, one per (experiment, seed) run (Snakemake wildcards; in DVC ``${experiment}`` and the
``foreach`` item over ``seeds``); ``{shard}`` marks a shard's folder (Snakemake's wildcard, DVC's loop item).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpabanim.config.mappings import flatten
from cpabanim.data.layout import SHARD_MARKER, SHARDS_FOLDER, shard_name  # the names of shards have one home

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def expand(template: str, params: Mapping[str, Any], keep: tuple[str, ...] = ()) -> str:
    """Fill ``{dotted.key}`` fields of ``template`` from ``params``; fields named in ``keep`` stay as they are."""
    flat = flatten(params)

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name in keep:
            return match.group(0)
        if name not in flat:
            raise KeyError(f"path template {template!r} names {name!r}, which is not a parameter")
        return str(flat[name]).rstrip("/")

    return _FIELD.sub(value, template)


def section_keys(section: str, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The dotted keys of a params section (from the schema), less ``exclude``: for stages that read a section
    except a few settings."""
    from cpabanim.config.schema import schema

    keys = (f"{section}.{key}" for key in schema()["properties"][section]["properties"])
    return tuple(k for k in keys if k not in exclude)


@dataclass(frozen=True)
class Output:
    """One thing a stage writes.

    ``persist``: never deleted by an orchestrator before the stage re-runs (downloads, checkpoints to resume
    from); Snakemake then tracks ``marker`` (a file inside the folder, written last) instead of the folder, and
    DVC keeps the folder with ``persist: true``. ``kind``: ``dir`` or ``file``. ``metric``/``plot``: DVC roles.
    ``cache``: False for small files kept in git (metrics, report figures).

    The folder a sharded stage's shard jobs fill (:attr:`Stage.shards`), one of two kinds, each shard folder
    persistent and tracked by its record ``done.json``, written last:

    - ``gathered``: a shared data stage's folder: each shard job fills ``shards/<kkk>/`` in it and the gather job
      writes these files there, the first of them the index that consumers track;
    - ``holds_shards``: a per-experiment stage's work folder, ``<path>/<kkk>/`` per shard; the gather job writes
      the stage's other outputs (``reconstruction/``, ``metrics.json``, ...) from the shards' records.
    """

    name: str
    path: str
    kind: str = "dir"
    persist: bool = False
    marker: str | None = None
    cache: bool = True
    metric: bool = False
    plot: dict[str, Any] | None = None
    report: str | None = None  # Snakemake report category (figures and tables)
    gathered: tuple[str, ...] = ()
    holds_shards: bool = False

    @property
    def sharded(self) -> bool:
        """Whether the shard jobs fill this folder."""
        return self.holds_shards or bool(self.gathered)

    @property
    def tracked_path(self) -> str:
        """What Snakemake declares: the marker inside a persistent folder, the index of a gathered one, else the
        path itself."""
        if self.gathered:
            return f"{self.path}/{self.gathered[0]}"
        return f"{self.path}/{self.marker}" if self.persist and self.marker else self.path

    @property
    def shards_root(self) -> str:
        """The folder that holds the shards' folders: ``<path>/shards`` (gathered) or ``<path>`` (holds_shards)."""
        return self.path if self.holds_shards else f"{self.path}/{SHARDS_FOLDER}"

    def shard_path(self, shard: str = "{shard}") -> str:
        """The folder shard ``shard`` fills (``{shard}``: the wildcard)."""
        return f"{self.shards_root}/{shard}"

    def shard_marker(self, shard: str = "{shard}") -> str:
        """The record a shard job writes last: Snakemake tracks it, so the shard's folder is never deleted."""
        return f"{self.shard_path(shard)}/{SHARD_MARKER}"


@dataclass(frozen=True)
class Stage:
    """A pipeline stage, declared once.

    ``params``: the dotted keys it reads that define its outputs (a change re-runs it, in both tools).
    ``settings``: keys it also reads that only say *how* it runs (device): logged, never a reason to re-run.
    ``inputs``: names of other stages' outputs it reads. ``per_experiment``: one job per experiment (its
    output paths contain ``{experiment}``); otherwise the stage is shared by every experiment and no experiment
    overlay may change what it reads. ``aggregate``: reads the outputs of every experiment (the report).
    ``shards``: the params key of the stage's shard count: the stage runs as that many shard jobs (``cpabanim
    <stage> --shard K``, each on the videos whose name hashes to K) and one gather job (``--gather``), in both
    tools (docs/pipeline.md, "Sharded stages"); the shard jobs fill its :attr:`shard_output`. A shared stage's
    shards are one set for every experiment; a per-experiment stage's, one set per (experiment, seed) run.
    """

    name: str
    help: str
    module: str
    params: tuple[str, ...]
    outputs: tuple[Output, ...]
    inputs: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    per_experiment: bool = False
    aggregate: bool = False
    # whether its work runs on a GPU: False, True (one GPU), or (params, GPUs of the machine or None on a cluster)
    # -> GPUs, e.g. evaluation only with a network metric (cpabanim/pipeline/resources.py)
    gpu: bool | Callable[[Mapping[str, Any], int | None], int] = False
    shards: str | None = None

    def shard_names(self, params: Mapping[str, Any]) -> list[str]:
        """``["000", "001", ...]``: the shards of a sharded stage, as many as its count key says in ``params``
        (none for another stage): Snakemake's wildcard values, dvc.yaml's ``foreach``, the journal's names."""
        return [shard_name(k) for k in range(int(flatten(params)[self.shards]))] if self.shards else []

    @property
    def shard_output(self) -> Output:
        """The output a sharded stage's shard jobs fill together."""
        return next(out for out in self.outputs if out.sharded)

    @property
    def gather_outputs(self) -> tuple[str, ...]:
        """The path templates the gather job writes: the index files of a gathered folder, then the stage's outputs
        other than its shards' folder."""
        out = self.shard_output
        return (*(f"{out.path}/{name}" for name in out.gathered), *(o.path for o in self.outputs if not o.sharded))

    @property
    def code(self) -> tuple[str, ...]:
        """The code paths this stage runs (found from its imports: :mod:`cpabanim.pipeline.code`); editing one
        of them re-runs the stage, in both tools."""
        from cpabanim.pipeline.code import stage_code

        return stage_code(self.module)

    def output(self, name: str) -> Output:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"stage {self.name} has no output {name!r}")


@dataclass(frozen=True)
class StageIO:
    """The concrete paths of one stage run: ``io.inputs["processed"]``, ``io.outputs["reconstruction"]``."""

    inputs: dict[str, Path] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    # aggregate stages: experiment -> seed -> input name -> path
    experiments: dict[str, dict[int, dict[str, Path]]] = field(default_factory=dict)
