"""``cpabanim record``: write into ``dvc.lock`` what a Snakemake run made (docs/pipeline.md, "One record").

    cpabanim record [--overrides FILE] [--experiments default,tps]

The Snakefile runs it after every successful run (its ``onsuccess`` hook), so both runners leave one version
record: after ``snakemake --cores all``, ``dvc status`` is clean, ``dvc repro`` runs nothing and ``dvc push`` has the
outputs. It writes ``params.resolved.yaml`` with the values the run used (the command line's included: the lock
then says exactly what ran) and ``dvc commit``s it (the ``params`` stage), then the stages that *ran*: those the
run's jobs noted in its journal (:mod:`cpabanim.pipeline.journal`; what a failed run before it completed too), that
are stages of ``dvc.yaml`` and whose files are all there. A stage that did not run is not committed again (at
scale a commit hashes the whole dataset: minutes per stage). The per-experiment stages and the report count only
when they ran for ``dvc.yaml``'s experiment (params.yaml's), the one DVC's files describe. Outside a DVC repository
it says so and records nothing.
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


def stages_to_record(params: dict, experiments: list[str], file_seeds: list[int], ran: set[str]) -> list[str]:
    """``params`` and the dvc.yaml stages of ``ran`` (the dvc stage names the run completed for params.yaml's
    experiment) whose outputs are this run's and are all on disk, in dvc.yaml's order.

    ``file_seeds``: the seeds of params.yaml, over which dvc.yaml's per-experiment stages loop (``train@0``); a
    seed the run made beyond them has no stage in dvc.yaml. The report is recorded when the run's seeds are the
    file's and its experiments include params.yaml's: otherwise it compared other runs than dvc.yaml's."""
    from cpabanim.pipeline import all_stages, run_seeds, stage_io
    from cpabanim.pipeline.journal import dvc_stage_name

    wanted = ["params"]
    for stage in all_stages().values():
        if stage.aggregate and (params["experiment"] not in experiments or run_seeds(params) != file_seeds):
            continue
        for seed in file_seeds if stage.per_experiment else [None]:
            run = params if seed is None else {**params, "seed": seed}
            name = dvc_stage_name(stage, run)
            if name not in ran:
                continue
            io = stage_io(stage, run, [params["experiment"]] if stage.aggregate else None)
            paths = [*io.inputs.values(), *io.outputs.values()]
            paths += [p for by_seed in io.experiments.values() for per in by_seed.values() for p in per.values()]
            if all(path.exists() for path in paths):
                wanted.append(name)
    return wanted


def run(args: argparse.Namespace) -> int:
    from cpabanim.pipeline.journal import clear, read_journal

    root = Path(args.params).resolve().parent
    journal = read_journal(root)
    dvc = shutil.which("dvc")
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file() or dvc is None:
        log.info("no DVC repository (or no dvc) in %s: nothing recorded in dvc.lock", root)
        clear(journal)
        return 0
    params = params_from_args(args)
    write_resolved(params, root / RESOLVED_PARAMS)
    file_seeds = [int(s) for s in read_mapping(Path(args.params), "parameter file").get("seeds") or [params["seed"]]]
    experiments = [e for e in args.experiments.split(",") if e]
    stages = stages_to_record(params, experiments, file_seeds, journal.ran(params["experiment"]))
    done = subprocess.run([dvc, "commit", "--force", "--quiet", *stages], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:  # the journal stays: the next successful run records these stages
        last = (done.stderr or done.stdout).strip().splitlines()
        raise CpabanimError(f"dvc commit {' '.join(stages)} failed: {last[-1] if last else done.returncode}")
    clear(journal)
    log.info("recorded in dvc.lock: %s", ", ".join(stages))
    return 0
