"""Stage ``report``: every experiment's results in MLflow and a comparison of the experiments (docs/pipeline.md).

Snakemake's ``--report`` embeds the outputs with a ``report`` category, captioned by
``workflow/report/<output name>.rst``; DVC's ``plots show`` shows the PNGs.

Aggregates over the experiments of the invocation (Snakemake: ``--config experiments=[cpab,tps]``; DVC and a
stage run by hand: the experiment of the params, or ``--experiments a,b``).
"""

from __future__ import annotations

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
    from cpabanim.reporting.report import report_experiments

    report_experiments(params, cfg, io)
