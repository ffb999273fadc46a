"""The stages as each orchestrator sees them, normalised for comparison.

``python dag.py snakemake|dvc ROOT`` prints a JSON mapping ``stage -> {deps, outs, persist, params}`` read through
each tool's own API (the Snakemake workflow as parsed by ``snakemake.api`` with ``{experiment}`` and ``{seed}``
left as wildcards, the dvc.yaml stages as resolved by ``dvc.repo.Repo``, whose ``train@0`` is ``train`` with the
seed ``{seed}``). Persistent folders are compared as folders:
Snakemake tracks a marker file inside them. Run in a subprocess so that each tool parses a fresh interpreter.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

KEEP = ("experiment", "seed")


def _shard_normal(path: str) -> str:
    """A shard's folder or record, whichever shard (``shards/003``, ``shards/{shard}/done.json``, or the whole
    ``shards`` folder a gather reads in DVC; a per-experiment stage's ``shards/<stage>/003``) ->
    ``shards[/<stage>]/{shard}``."""
    return re.sub(r"/shards(/[a-z]+)?(/(\d{3}|\{shard\})(/done\.json)?)?$", r"/shards\1/{shard}", path)


def _dvc_normal(path: str) -> str:
    return _shard_normal(re.sub(r"seed\d+", "seed{seed}", path.replace("default", "{experiment}")))


def snakemake_stages(root: Path) -> dict:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    from cpabanim.config.layers import load_params
    from cpabanim.pipeline import all_stages
    from cpabanim.pipeline.base import expand

    params = load_params(root / "params.yaml")
    markers = {o.tracked_path: o.path for s in all_stages().values() for o in s.outputs if o.persist}
    # a sharded stage's folder: its consumers track its index, DVC the folder
    indexes = {
        expand(o.tracked_path, params, keep=KEEP): expand(o.path, params, keep=KEEP)
        for s in all_stages().values()
        for o in s.outputs
        if o.gathered
    }
    stages = {}
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(), snakefile=root / "workflow" / "Snakefile", workdir=root
        )
        for rule in workflow._workflow.rules:
            if rule.name == "all":
                continue

            def normal(path: str) -> str:
                path = re.sub(
                    r"\{(\w+),(?:[^{}]|\{\d+\})*\}", r"{\1}", path
                )  # wildcard constraints written into the path
                # the report's inputs, expanded for each experiment and seed
                path = re.sub(r"seed\d+", "seed{seed}", path.replace("default", "{experiment}"))
                for marker, folder in markers.items():
                    if path == expand(marker, params, keep=KEEP):
                        return expand(folder, params, keep=KEEP)
                return _shard_normal(path)

            outs = [normal(str(p)) for p in rule.output]
            persistent = {expand(f, params, keep=KEEP) for f in markers.values()}
            stages[rule.name] = {
                "deps": sorted({indexes.get(normal(str(p)), normal(str(p))) for p in rule.input}),
                "outs": sorted(outs),
                "persist": sorted(o for o in outs if o in persistent),
                "shell": rule.shellcmd,
                "code": str(rule.params.code),
            }
    return stages


def dvc_stages(root: Path) -> dict:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            name, _, seed = stage.name.partition("@")  # train@0: the run of seed 0 (params.yaml's seeds)
            if name.endswith("_shard"):  # preprocess_shard@003: shard 3 (a foreach over the shards);
                # reconstruct_shard@0-003: shard 3 of seed 0 (a matrix over the seeds and the shards)
                seed, _, shard = seed.rpartition("-")
                cmd = stage.cmd.replace(f"--shard {shard}", "--shard {shard}")
            else:
                cmd = stage.cmd
            cmd = cmd.replace(f"seed={seed}", "seed={seed}") if seed else cmd
            stages[name] = {
                "deps": sorted(
                    _dvc_normal(d.def_path)
                    for d in stage.deps
                    if not isinstance(d, ParamsDependency) and not d.def_path.startswith("cpabanim/")
                ),
                "code": sorted(d.def_path for d in stage.deps if d.def_path.startswith("cpabanim/")),
                "outs": sorted(_dvc_normal(o.def_path) for o in stage.outs),
                "persist": sorted(_dvc_normal(o.def_path) for o in stage.outs if o.persist),
                "seeds": sorted({*stages.get(name, {}).get("seeds", []), *([int(seed)] if seed else [])}),
                "params": sorted(p for d in stage.deps if isinstance(d, ParamsDependency) for p in d.params),
                "cmd": cmd,
            }
    return stages


if __name__ == "__main__":
    tool, root = sys.argv[1], Path(sys.argv[2]).resolve()
    reader = {"snakemake": snakemake_stages, "dvc": dvc_stages}[tool]
    json.dump(reader(root), sys.stdout, indent=1, sort_keys=True, default=str)
