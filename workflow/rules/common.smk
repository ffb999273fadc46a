# Shared set-up of the cpabanim rules (the rules themselves are generated: `cpabanim dag --write`).
#
# There is no `configfile:` directive: Snakemake's `config` holds only the command line (`--config
# 'model={motion: tps}'`, `--config set='[train.max_steps=50]'`, `--configfile FILE`), the top parameter layer.
# The stages resolve the same layers themselves (defaults < preset < params.yaml < experiment < command line); the
# rules hand them the command line's values in one file (`--overrides`, below) and the experiment (`--experiment`).
import os
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
from cpabanim.pipeline import all_stages, check_shared_stages
from cpabanim.pipeline.base import expand as fill_template

try:
    _OVERRIDES = overrides_from_snakemake(config)
    _FILE = read_mapping(Path("params.yaml"), "parameter file")
    BASE = resolve(_FILE, _OVERRIDES)
    _wanted = config.get("experiments") or [BASE["experiment"]]
    EXPERIMENTS = [str(e) for e in ([_wanted] if isinstance(_wanted, str) else _wanted)]
    PARAMS = {e: resolve(_FILE, {**_OVERRIDES, "experiment": e}) for e in EXPERIMENTS}
    check_shared_stages(PARAMS)
except CpabanimError as err:
    raise ValueError(f"cpabanim: {err}") from None
STAGES = all_stages()

wildcard_constraints:
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",


def path(template):
    """A declared path with the parameters filled in; `{experiment}` stays a wildcard."""
    return fill_template(template, BASE, keep=("experiment",))


def stage_values(stage, experiment):
    """The values of exactly the keys the stage declares: a change re-runs the job (Snakemake's params trigger)."""
    return flatten(restrict(PARAMS[experiment or EXPERIMENTS[0]], STAGES[stage].params))


# The command line's values reach the jobs through one file, not their command lines: a rule's params are its
# re-run trigger, and only the values of the keys it declares (stage_values) may re-run it.
OVERRIDES_FILE = ".snakemake/cpabanim/overrides.yaml"
_text = yaml.safe_dump({k: v for k, v in _OVERRIDES.items() if k != "experiment"}, sort_keys=True)
if not Path(OVERRIDES_FILE).is_file() or Path(OVERRIDES_FILE).read_text() != _text:
    Path(OVERRIDES_FILE).parent.mkdir(parents=True, exist_ok=True)
    Path(OVERRIDES_FILE + ".tmp").write_text(_text)
    os.replace(OVERRIDES_FILE + ".tmp", OVERRIDES_FILE)


def stage_cli(stage, experiment):
    """The command line's values (a file) and the experiment (or the list, for the report)."""
    args = [f"--overrides={OVERRIDES_FILE}"]
    if STAGES[stage].aggregate:
        args.append("--experiments=" + ",".join(EXPERIMENTS))
    args.append(f"--experiment={experiment or EXPERIMENTS[0]}")
    return " ".join(shlex.quote(a) for a in args)


# The rules call `cpabanim`: find it next to the Python running Snakemake even when its venv is not activated.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
# One MLflow parent run per experiment per invocation: every job inherits this id (cpabanim/tracking/).
os.environ.setdefault("CPABANIM_PIPELINE_RUN", f"snakemake-{os.getpid()}-{int(time.time())}")


def persistent_markers():
    """The markers of every persistent folder (downloads, checkpoints), for `rule all`: Snakemake does not re-make
    a missing intermediate file whose consumers are up to date, so removing a checkpoint folder (the documented
    way to retrain) must be seen at the top of the DAG."""
    markers = []
    for stage in STAGES.values():
        for out in stage.outputs:
            if out.persist:
                markers += expand(path(out.tracked_path), experiment=EXPERIMENTS)
    return markers
