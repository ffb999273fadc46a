"""Stage ``report``: every experiment's results in MLflow and a comparison of the experiments (docs/pipeline.md).

Snakemake's ``--report`` embeds the outputs with a ``report`` category, captioned by
``workflow/report/<output name>.rst``; DVC's ``plots show`` shows the PNGs.

Aggregates over the experiments of the invocation (Snakemake: ``--config experiments=[cpab,tps]``; DVC and a
stage run by hand: the experiment of the params, or ``--experiments a,b``) and, for each, every seed of the params
(``seeds``): mean ± sd, per-seed and per-video tables, paired differences against ``report.reference`` with a
bootstrap interval and a verdict (docs/pipeline.md, "Seeds").
"""

from __future__ import annotations

from cpabanim.pipeline.base import Output, Stage, StageIO

REPORT = "{paths.outputs}/report"
# the per-experiment stages whose recorded params the table compares, in pipeline order (a test checks them against
# the declarations: importing cpabanim.pipeline here would make every declaration a code dependency of the report)
RECORDED_STAGES = ("train", "avd", "reconstruct", "animate", "evaluate")
IMAGE = {}  # a DVC plot that is an image: `dvc plots show` embeds it as <img> and it renders offline
LOSS_PLOT = {"x": "step", "y": "smoothed", "template": "linear"}

STAGE = Stage(
    name="report",
    help="log every experiment's metrics to MLflow and write the comparison of experiments",
    module=__name__,
    params=("seeds", "report", "tracking.log_checkpoints"),
    inputs=("processed", "metrics", "per_video", "reconstruction", "animation", "checkpoints", "avd_checkpoints"),
    outputs=(
        Output("table_md", f"{REPORT}/experiments.md", kind="file", cache=False),
        Output("table_csv", f"{REPORT}/experiments.csv", kind="file", cache=False, report="Comparison"),
        Output("tables_csv", f"{REPORT}/tables.csv", kind="file", cache=False),
        Output("metrics_png", f"{REPORT}/metrics.png", kind="file", cache=False, report="Comparison", plot=IMAGE),
        Output("samples_png", f"{REPORT}/samples.png", kind="file", cache=False, report="Comparison", plot=IMAGE),
        Output("loss_png", f"{REPORT}/train_loss.png", kind="file", cache=False, report="Training", plot=IMAGE),
        # a data plot: `dvc plots diff` overlays it across revisions and DVC experiments (it needs Vega, online)
        Output("loss_csv", f"{REPORT}/train_loss.csv", kind="file", cache=False, plot=LOSS_PLOT),
        Output("html", f"{REPORT}/index.html", kind="file", cache=False),
        Output("videos_html", f"{REPORT}/videos.html", kind="file", cache=False),
        Output("videos", f"{REPORT}/videos"),  # the page's video files (cached by DVC, not in git)
    ),
    aggregate=True,
)


def run(cfg, io: StageIO, params) -> None:
    """``params``: the invocation's whole params, which this aggregate stage alone receives, only for the MLflow
    parent run of each experiment (:func:`cpabanim.tracking.runs.experiment_parent`): its store (the tracking
    section) and, when an experiment has no parent yet, the provenance tags of the one created (device, preset,
    data). The table's parameters are what each experiment's runs recorded (:mod:`cpabanim.reporting.recorded`),
    never these params, which are today's and another experiment's."""
    from functools import partial

    from cpabanim.reporting.report import report_experiments
    from cpabanim.tracking.runs import experiment_parent, experiment_seed_run

    report_experiments(
        experiments=io.experiments,
        stages=RECORDED_STAGES,
        outputs=io.outputs,
        tracking=params["tracking"],
        log_checkpoints=bool(cfg.tracking.log_checkpoints),
        reference=cfg.report.reference,
        parent_of=partial(experiment_parent, params),
        seed_run_of=partial(experiment_seed_run, params),
    )
