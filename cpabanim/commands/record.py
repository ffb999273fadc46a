"""``cpabanim record``: write into ``dvc.lock`` what a Snakemake run made (docs/pipeline.md, "One record").

    cpabanim record [--overrides FILE] [--experiments default,tps]

The Snakefile runs it after every successful run (its ``onsuccess`` hook), so both runners leave one version
record: after ``snakemake --cores all``, ``dvc status`` is clean, ``dvc repro`` runs nothing and ``dvc push`` has the
outputs. It writes ``params.resolved.yaml`` with the values the run used (the command line's included: the lock
then says exactly what ran), then ``dvc commit``s each stage of ``dvc.yaml`` whose files are all there: the shared
stages always; the per-experiment stages and the report only when the run included ``dvc.yaml``'s experiment
(params.yaml's), the one DVC's files describe. Outside a DVC repository it says so and records nothing.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
from pathlib import Path

from cpabanim.commands.dag import RESOLVED_PARAMS
from cpabanim.commands.params import write_resolved
from cpabanim.config.layers import add_params_arguments, params_from_args
from cpabanim.config.mappings import read_mapping
from cpabanim.errors import CpabanimError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser, preset=False, experiment=False, overrides_file=True)
    parser.add_argument("--experiments", default="", help="the experiments the run made (comma-separated)")


def stages_to_record(params: dict, experiments: list[str], file_seeds: list[int]) -> list[str]:
    """The dvc.yaml stages whose outputs this run made and which are all on disk, in pipeline order.

    ``file_seeds``: the seeds of params.yaml, over which dvc.yaml's per-experiment stages loop (``train@0``); a
    seed the run made beyond them has no stage in dvc.yaml. The report is recorded when the run's seeds are the
    file's: otherwise it compared other runs than dvc.yaml's."""
    from cpabanim.pipeline import all_stages, run_seeds, stage_io

    wanted = ["params"]
    for name, stage in all_stages().items():
        if (stage.per_experiment or stage.aggregate) and params["experiment"] not in experiments:
            continue
        if stage.aggregate and run_seeds(params) != file_seeds:
            continue
        seeds = [s for s in file_seeds if s in run_seeds(params)] if stage.per_experiment else [None]
        for seed in seeds:
            run = params if seed is None else {**params, "seed": seed}
            io = stage_io(stage, run, [params["experiment"]] if stage.aggregate else None)
            paths = [*io.inputs.values(), *io.outputs.values()]
            paths += [p for by_seed in io.experiments.values() for per in by_seed.values() for p in per.values()]
            if all(path.exists() for path in paths):
                wanted.append(name if seed is None else f"{name}@{seed}")
    return wanted


def run(args: argparse.Namespace) -> int:
    root = Path(args.params).resolve().parent
    dvc = shutil.which("dvc")
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file() or dvc is None:
        log.info("no DVC repository (or no dvc) in %s: nothing recorded in dvc.lock", root)
        return 0
    params = params_from_args(args)
    write_resolved(params, root / RESOLVED_PARAMS)
    file_seeds = read_mapping(Path(args.params), "parameter file").get("seeds") or [params["seed"]]
    stages = stages_to_record(params, [e for e in args.experiments.split(",") if e], [int(s) for s in file_seeds])
    done = subprocess.run([dvc, "commit", "--force", "--quiet", *stages], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()
        raise CpabanimError(f"dvc commit {' '.join(stages)} failed: {last[-1] if last else done.returncode}")
    log.info("recorded in dvc.lock: %s", ", ".join(stages))
    return 0
