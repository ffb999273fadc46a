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
it says so and records nothing, as it does with ``CPABANIM_RECORD=0`` in the environment: a study that writes to
its own folders (``workflow/studies/synthetic_motion.sh``), which dvc.yaml does not describe, leaves dvc.lock and
params.resolved.yaml alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
from pathlib import Path

from cpabanim.commands.dag import RESOLVED_PARAMS
from cpabanim.commands.params import write_resolved
from cpabanim.config.layers import add_params_arguments, load_params, params_from_args
from cpabanim.data.layout import shard_name
from cpabanim.errors import CpabanimError

log = logging.getLogger(__name__)
RECORD_ENV = "CPABANIM_RECORD"  # "0": record nothing (a study's own folders are not dvc.yaml's)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_params_arguments(parser, preset=False, experiment=False, overrides_file=True)
    parser.add_argument("--experiments", default="", help="the experiments the run made (comma-separated)")


def stages_to_record(params: dict, experiments: list[str], file_params: dict, ran: set[str]) -> list[str]:
    """``params`` and the dvc.yaml stages of ``ran`` (the dvc stage names the run completed for params.yaml's
    experiment) whose files are all on disk, in dvc.yaml's order.

    ``file_params``: params.yaml's, from which dvc.yaml was generated: its per-experiment stages loop over their
    seeds (``train@0``), a sharded stage over their shard count (``preprocess_shard@000``, then its gather
    ``preprocess``); a seed or shard the run made beyond them has no stage in dvc.yaml. The report is recorded when
    the run's seeds are the file's and its experiments include params.yaml's: otherwise it compared other runs than
    dvc.yaml's."""
    from cpabanim.pipeline import all_stages, run_seeds, stage_io

    wanted = ["params"]
    for stage in all_stages().values():
        if stage.aggregate and (params["experiment"] not in experiments or run_seeds(params) != run_seeds(file_params)):
            continue
        shards, gathers = [], []  # dvc.yaml lists a stage's shard matrix (every seed's) before its gather loop
        for seed in run_seeds(file_params) if stage.per_experiment else [None]:
            run = params if seed is None else {**params, "seed": seed}
            io = stage_io(stage, run, [params["experiment"]] if stage.aggregate else None)
            needed = [*io.inputs.values()]
            needed += [p for by_seed in io.experiments.values() for per in by_seed.values() for p in per.values()]
            *of_shards, gather = _dvc_stages(stage, run, file_params, io)
            for names, (name, made) in [*((shards, s) for s in of_shards), (gathers, gather)]:
                if name in ran and all(path.exists() for path in [*needed, *made]):
                    names.append(name)
        wanted += shards + gathers
    return wanted


def _dvc_stages(stage, run: dict, file_params: dict, io) -> list[tuple[str, list[Path]]]:
    """(name, the files it makes) of each dvc.yaml stage that ``stage`` is, for the experiment and seed of ``run``:
    itself, or a sharded stage's shards and its gather."""
    from cpabanim.pipeline.base import expand
    from cpabanim.pipeline.journal import dvc_stage_name, shard_count

    if not stage.shards:
        return [(dvc_stage_name(stage, run), list(io.outputs.values()))]
    out = stage.shard_output
    shards = [
        (dvc_stage_name(stage, run, k), [Path(expand(out.shard_path(shard_name(k)), run))])
        for k in range(shard_count(stage, file_params))
    ]
    return [*shards, (dvc_stage_name(stage, run), [Path(expand(path, run)) for path in stage.gather_outputs])]


def run(args: argparse.Namespace) -> int:
    from cpabanim.pipeline.journal import clear, read_journal

    root = Path(args.params).resolve().parent
    journal = read_journal(root)
    if os.environ.get(RECORD_ENV, "1") == "0":
        log.info("%s=0: nothing recorded in dvc.lock", RECORD_ENV)
        clear(journal)
        return 0
    dvc = shutil.which("dvc")
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file() or dvc is None:
        log.info("no DVC repository (or no dvc) in %s: nothing recorded in dvc.lock", root)
        clear(journal)
        return 0
    params = params_from_args(args)
    write_resolved(params, root / RESOLVED_PARAMS)
    experiments = [e for e in args.experiments.split(",") if e]
    stages = stages_to_record(params, experiments, load_params(args.params), journal.ran(params["experiment"]))
    done = subprocess.run([dvc, "commit", "--force", "--quiet", *stages], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:  # the journal stays: the next successful run records these stages
        last = (done.stderr or done.stdout).strip().splitlines()
        raise CpabanimError(f"dvc commit {' '.join(stages)} failed: {last[-1] if last else done.returncode}")
    clear(journal)
    log.info("recorded in dvc.lock: %s", ", ".join(stages))
    return 0
