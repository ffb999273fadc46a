"""Stage ``report``: every experiment's results in MLflow and a comparison of the experiments (docs/pipeline.md).

Snakemake's ``--report`` embeds the outputs with a ``report`` category, captioned by
``workflow/report/<output name>.rst``; DVC's ``plots show`` shows the PNGs.

Aggregates over the experiments of the invocation (Snakemake: ``--config experiments=[cpab,tps]``; DVC and a
stage run by hand: the experiment of the params, or ``--experiments a,b``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cpabanim.pipeline.base import Output, Stage, StageIO

REPORT = "{paths.outputs}/report"
IMAGE = {}  # a DVC plot that is an image: `dvc plots show` embeds it as <img> and it renders offline

STAGE = Stage(
    name="report",
    help="log every experiment's metrics to MLflow and write the comparison of experiments",
    module=__name__,
    params=("tracking.log_checkpoints",),
    inputs=("processed", "metrics", "per_video", "reconstruction", "animation", "checkpoints"),
    outputs=(
        Output("table_md", f"{REPORT}/experiments.md", kind="file", cache=False),
        Output("table_csv", f"{REPORT}/experiments.csv", kind="file", cache=False, report="Comparison"),
        Output("metrics_png", f"{REPORT}/metrics.png", kind="file", cache=False, report="Comparison", plot=IMAGE),
        Output("samples_png", f"{REPORT}/samples.png", kind="file", cache=False, report="Comparison", plot=IMAGE),
        Output("loss_png", f"{REPORT}/train_loss.png", kind="file", cache=False, report="Training", plot=IMAGE),
        Output("loss_csv", f"{REPORT}/train_loss.csv", kind="file", cache=False),
        Output("html", f"{REPORT}/index.html", kind="file", cache=False),
    ),
    aggregate=True,
)


def run(cfg, io: StageIO, params) -> None:
    """``params``: the invocation's whole params, which this aggregate stage alone receives: each experiment's
    differences are resolved from them here, and an experiment's MLflow parent run, when it has none yet, is
    created with them (:func:`cpabanim.tracking.runs.experiment_parent`); the library gets explicit values."""
    from functools import partial

    from cpabanim.reporting.report import report_experiments
    from cpabanim.tracking.runs import experiment_parent

    report_experiments(
        experiments=io.experiments,
        differences=experiment_differences(params, list(io.experiments)),
        outputs=io.outputs,
        tracking=params["tracking"],
        log_checkpoints=bool(cfg.tracking.log_checkpoints),
        parent_of=partial(experiment_parent, params),
    )


def experiment_differences(params: Mapping[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """Experiment name -> its parameters that differ from the built-in defaults (paths and tracking aside): the
    params with the experiment's overlay (``experiments/<name>.yaml``) merged over them."""
    from cpabanim.config.layers import changed_from_defaults, experiment_path
    from cpabanim.config.mappings import deep_merge, read_mapping

    differences = {}
    for name in names:
        overlay_file = experiment_path(name, ".")
        values = deep_merge(params, read_mapping(overlay_file, "experiment")) if overlay_file.is_file() else params
        differences[name] = {
            k: v for k, v in changed_from_defaults(values).items() if not k.startswith(("paths.", "tracking."))
        }
    return differences
