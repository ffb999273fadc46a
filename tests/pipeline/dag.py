"""The stages as each orchestrator sees them, normalised for comparison.

``python dag.py snakemake|dvc ROOT`` prints a JSON mapping ``stage -> {cmd, deps, outs, persist, params,
param_values}`` read through each tool's own API (the Snakemake workflow as parsed by ``snakemake.api``, the
dvc.yaml stages as resolved by ``dvc.repo.Repo``: templating, metrics and plots included). Run in a subprocess
so that each tool parses a fresh interpreter state.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SNAKEMAKE_ONLY_PARAMS = {"params_file", "checkpoints"}  # how the rule calls the CLI, not a parameter value


def snakemake_stages(root: Path) -> dict:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    stages = {}
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=root / "Snakefile", workdir=root)
        rules = [rule for rule in workflow._workflow.rules if rule.name != "all"]
        # The training marker stands for the checkpoint folder (kept out of the outputs so training resumes).
        markers = {
            rule.params.checkpoints.rstrip("/") + ".done": rule.params.checkpoints
            for rule in rules
            if "checkpoints" in dict(rule.params.items())
        }
        for rule in rules:
            params = dict(rule.params.items())
            outs = [str(p) for p in rule.output]
            stages[rule.name] = {
                "cmd": rule.shellcmd.replace("{params.params_file}", params["params_file"]),
                "deps": sorted(markers.get(str(p), str(p)) for p in rule.input),
                "outs": sorted(markers.get(p, p) for p in outs),
                "persist": sorted(markers[p] for p in outs if p in markers),
                "params": sorted(k for k in params if k not in SNAKEMAKE_ONLY_PARAMS),
                "param_values": {k: v for k, v in params.items() if k not in SNAKEMAKE_ONLY_PARAMS},
            }
    return stages


def dvc_stages(root: Path) -> dict:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    from cpabanim.config import load_params

    values = load_params(root / "params.yaml")
    stages = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            params = sorted(p for d in stage.deps if isinstance(d, ParamsDependency) for p in d.params)
            stages[stage.name] = {
                "cmd": stage.cmd,
                "deps": sorted(d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)),
                "outs": sorted(o.def_path for o in stage.outs),
                "persist": sorted(o.def_path for o in stage.outs if o.persist),
                "params": params,
                "param_values": {p: values.get(p) for p in params},
            }
    return stages


if __name__ == "__main__":
    tool, root = sys.argv[1], Path(sys.argv[2]).resolve()
    sys.path.insert(0, str(root))
    reader = {"snakemake": snakemake_stages, "dvc": dvc_stages}[tool]
    json.dump(reader(root), sys.stdout, indent=1, sort_keys=True, default=str)
