# Shared set-up of the cpabanim rules (the rules themselves are generated: `cpabanim dag --write`).
#
# There is no `configfile:` directive: Snakemake's `config` holds only the command line (`--config
# 'model={motion: tps}'`, `--config set='[train.max_steps=50]'`, `--configfile FILE`), the top parameter layer.
# The stages resolve the same layers themselves (defaults < preset < params.yaml < experiment < command line); the
# rules hand them the command line's values in one file (`--overrides`, below) and, to per-experiment stages only,
# the experiment (`--experiment`): the shared stages (download, preprocess, masks) never see the experiment list.
import os
import re
import shlex
import sys
import time
from pathlib import Path

import yaml

from cpabanim.config.mappings import flatten, read_mapping
from cpabanim.config.overrides import overrides_from_snakemake
from cpabanim.config.layers import resolve
from cpabanim.errors import CpabanimError
from cpabanim.config.section import restrict
from cpabanim.pipeline import all_stages, check_shard_counts, check_shared_stages, distinct_experiments
from cpabanim.pipeline.code import code_digest as _digest_of_module
from cpabanim.pipeline.journal import JOURNAL_ENV, JOURNAL_ROOT
from cpabanim.pipeline.base import expand as fill_template
from cpabanim.pipeline.resources import gpu_request, local_gpus

try:
    _OVERRIDES = overrides_from_snakemake(config)
    _FILE = read_mapping(Path("params.yaml"), "parameter file")
    _OVERRIDES, _experiment = {k: v for k, v in _OVERRIDES.items() if k != "experiment"}, _OVERRIDES.get("experiment")
    BASE = resolve(_FILE, _OVERRIDES)  # what the shared stages run with (their jobs name no experiment)
    _wanted = config.get("experiments") or [_experiment or BASE["experiment"]]
    _wanted = [str(e).strip() for e in (_wanted.split(",") if isinstance(_wanted, str) else _wanted)]
    # the base experiment (params.yaml's) first: an experiment with its parameters is the base, trained once
    _resolved = {e: resolve(_FILE, {**_OVERRIDES, "experiment": e}) for e in dict.fromkeys([BASE["experiment"], *_wanted])}
    EXPERIMENTS, _aliases = distinct_experiments(_resolved, _wanted)
    for _alias, _same in _aliases.items():
        sys.stderr.write(f"cpabanim: experiment {_alias} has exactly the parameters of {_same}: one experiment, {_same}\n")
    PARAMS = {e: _resolved[e] for e in EXPERIMENTS}
    # every experiment runs once per seed (params `seeds`; null: the one `seed`); the data stages once in all
    SEEDS = [int(s) for s in (BASE["seeds"] or [BASE["seed"]])]
    check_shared_stages(_resolved)
    check_shard_counts(_resolved)
except CpabanimError as err:
    # one line, as the CLI says it (a ValueError would come wrapped in Snakemake's traceback of this file)
    sys.stderr.write(f"cpabanim: error: {err}\n")
    sys.exit(1)
STAGES = all_stages()

wildcard_constraints:
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",
    seed="[0-9]+",
    shard="[0-9]{3}",


def path(template):
    """A declared path with the parameters filled in; `{experiment}`, `{seed}` and `{shard}` stay wildcards."""
    return fill_template(template, BASE, keep=("experiment", "seed", "shard"))


def stage_values(stage, experiment, seed):
    """The values of exactly the keys the stage declares: a change re-runs the job (Snakemake's params trigger)."""
    params = {**PARAMS[experiment], "seed": seed} if experiment else BASE
    return flatten(restrict(params, STAGES[stage].params))


# The command line's values reach the jobs through one file, not their command lines: a rule's params are its
# re-run trigger, and only the values of the keys it declares (stage_values) may re-run it.
OVERRIDES_FILE = ".snakemake/cpabanim/overrides.yaml"
_text = yaml.safe_dump(_OVERRIDES, sort_keys=True)
if not Path(OVERRIDES_FILE).is_file() or Path(OVERRIDES_FILE).read_text() != _text:
    Path(OVERRIDES_FILE).parent.mkdir(parents=True, exist_ok=True)
    Path(OVERRIDES_FILE + ".tmp").write_text(_text)
    os.replace(OVERRIDES_FILE + ".tmp", OVERRIDES_FILE)


def stage_cli(stage, experiment, seed):
    """The command line's values (a file), and the experiment and seed of a per-experiment stage (the list, for
    the report; its seeds are the params'). A shared stage's command line names no experiment: changing the list
    never re-runs it."""
    args = [f"--overrides={OVERRIDES_FILE}"]
    if STAGES[stage].aggregate:
        args.append("--experiments=" + ",".join(EXPERIMENTS))
    elif STAGES[stage].per_experiment:
        args += [f"--experiment={experiment}", f"--set=seed={seed}"]
    return " ".join(shlex.quote(a) for a in args)


def code_digest(stage):
    """A hash of the code the stage runs (cpabanim/pipeline/code.py): a code edit re-runs the stages that run it."""
    return _digest_of_module(STAGES[stage].module)


# The rules call `cpabanim`: find it next to the Python running Snakemake even when its venv is not activated.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
# One MLflow parent run per experiment per invocation: every job inherits this id (cpabanim/tracking/).
os.environ.setdefault("CPABANIM_PIPELINE_RUN", f"snakemake-{os.getpid()}-{int(time.time())}")
# ... and this invocation's journal, where each job notes the stage it completed: `cpabanim record` commits those
# stages only (cpabanim/pipeline/journal.py). A folder in the project, which SLURM's nodes share; relative, as the
# jobs run in the project root. A job re-reading this file on a node keeps the submitting process's value.
os.environ.setdefault(
    JOURNAL_ENV, str(JOURNAL_ROOT / re.sub(r"[^A-Za-z0-9._-]", "_", os.environ["CPABANIM_PIPELINE_RUN"]))
)


# GPUs (docs/cluster.md, "GPUs"). Each GPU job asks for the GPUs its work uses (cpabanim/pipeline/resources.py:
# none on a machine without one, none for work that runs on the CPU). On one machine the machine's GPU count caps
# them, unless `--resources gpu=N` says otherwise; under a cluster executor the scope `local` keeps the submit host
# from counting them: the cluster decides how many GPU jobs run at once.
resource_scopes:
    gpu="local",


# The cap is set while this file is read: the scheduler takes its resources before any rule's are worked out, and
# every job's request is cut down to it. Only with `--cores`: a cluster run gives `--jobs`, which sets `_nodes`, and
# a cap of the submit host's GPUs would cut its jobs' requests to that host's (often none). (`--jobs` on one machine
# therefore sets no cap either: use `--cores` there, or `--resources gpu=N`.)
LOCAL_GPUS = local_gpus()
if workflow.global_resources["_nodes"].value is None and "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", LOCAL_GPUS)


def gpus(stage):
    """The `gpu` resource of a stage's jobs: a function of the job's wildcards (its experiment's parameters)."""
    declared = STAGES[stage]

    def request(wildcards):
        params = PARAMS[wildcards.experiment] if declared.per_experiment else BASE
        # the executor is known once the run starts: a cluster's node, not this machine, has the job's GPUs
        return gpu_request(declared, params, LOCAL_GPUS if workflow.local_exec else None)

    return request


def shard_names(stage):
    """The shards of a sharded stage ("000", "001", ...), as many as its count key (data.shards, reconstruct.shards:
    the same in every experiment) says: one job each, of every run for a per-experiment stage."""
    return STAGES[stage].shard_names(BASE)


def persistent_markers():
    """The markers of every persistent folder (downloads, checkpoints, shards), for `rule all`: Snakemake does not re-make
    a missing intermediate file whose consumers are up to date, so removing a checkpoint folder (the documented
    way to retrain) must be seen at the top of the DAG."""
    markers = []
    for stage in STAGES.values():
        for out in stage.outputs:
            if out.persist:
                markers += expand(path(out.tracked_path), experiment=EXPERIMENTS, seed=SEEDS)
            if out.sharded:  # a shard's folder (each run's, of a per-experiment stage), persistent too
                shards = shard_names(stage.name)
                markers += expand(path(out.shard_marker()), experiment=EXPERIMENTS, seed=SEEDS, shard=shards)
    return markers


def record_in_dvc_lock():
    """After a successful run: what ran (the stages the jobs noted in the journal) goes into dvc.lock (`cpabanim
    record`), so that `dvc status` is clean, `dvc repro` runs nothing and `dvc push` has the outputs. Without a DVC
    repository it says so and does nothing."""
    args = [f"--overrides={OVERRIDES_FILE}", "--experiments=" + ",".join(EXPERIMENTS)]
    shell("cpabanim record " + " ".join(shlex.quote(a) for a in args))
