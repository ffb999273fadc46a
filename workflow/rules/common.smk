# Shared set-up of the cpabanim rules: resolve and validate the parameters once, expose the paths.
import os
import sys
import time
from pathlib import Path

import yaml

from cpabanim.config import load_params, resolve_params
from cpabanim.errors import CpabanimError

# Snakemake has merged params.yaml, any --configfile (e.g. presets/vox-256.yaml) and --config into `config`;
# the stages get exactly these values (preset merged, schema-validated), or a clear error here.
try:
    P = resolve_params(config, base_dir=workflow.basedir)
except CpabanimError as err:
    raise ValueError(f"cpabanim: {err}") from None

PATHS = P["paths"]

# The stages read their parameters from a file: params.yaml itself when Snakemake's config is exactly that,
# else the resolved config written under .snakemake/ (only rewritten when it changes).
if P == load_params("params.yaml"):
    PARAMS_FILE = "params.yaml"
else:
    PARAMS_FILE = ".snakemake/cpabanim/params.yaml"
    _text = yaml.safe_dump(P, sort_keys=False)
    _resolved = Path(PARAMS_FILE)
    if not _resolved.is_file() or _resolved.read_text() != _text:
        _resolved.parent.mkdir(parents=True, exist_ok=True)
        _resolved.write_text(_text)

# The rules call `cpabanim`: find it next to the Python running Snakemake even when its venv is not activated.
os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])

# One MLflow parent run per invocation: every stage job inherits this id (cpabanim/tracking.py).
os.environ.setdefault("CPABANIM_PIPELINE_RUN", f"snakemake-{os.getpid()}-{int(time.time())}")


def section(*names):
    """The parameter values a rule depends on, as Snakemake params: a changed value re-runs the rule."""
    return {name: P.get(name) for name in names}


# Training resumes: Snakemake deletes a rule's outputs before re-running it, so the checkpoint folder is NOT
# an output (it is a param); the rule's output is a marker touched after training completes.
TRAIN_DONE = PATHS["checkpoints"].rstrip("/") + ".done"
METRICS = f"{PATHS['outputs']}/metrics.json"
METRICS_TABLE = f"{PATHS['outputs']}/metrics_per_video.csv"
REPORT_DIR = f"{PATHS['outputs']}/report"
REPORT_OUTS = [f"{REPORT_DIR}/runs.md", f"{REPORT_DIR}/runs.csv", f"{REPORT_DIR}/metrics.png", f"{REPORT_DIR}/samples.png",
               f"{REPORT_DIR}/train_loss.csv"]
