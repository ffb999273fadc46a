"""Stage ``evaluate``: the field's metrics of one experiment's reconstructions and animations (docs/evaluation.md)."""

from __future__ import annotations

from cpabanim.pipeline.base import Output, Stage, StageIO

STAGE = Stage(
    name="evaluate",
    help="metrics (L1, PSNR, SSIM, AKD, MKR, AED) of reconstructions and animations",
    module=__name__,
    params=("evaluate",),
    settings=("device",),
    inputs=("processed", "reconstruction", "animation"),
    outputs=(
        Output("metrics", "{paths.outputs}/{experiment}/metrics.json", kind="file", cache=False, metric=True),
        Output("unavailable", "{paths.outputs}/{experiment}/metrics_unavailable.json", kind="file", cache=False),
        # not a DVC data plot: those need Vega from a CDN to render; the report's PNGs are DVC's plots instead
        Output("per_video", "{paths.outputs}/{experiment}/metrics_per_video.csv", kind="file", cache=False),
    ),
    per_experiment=True,
    gpu=True,
)


def run(cfg, io: StageIO) -> None:
    from cpabanim.evaluation.evaluate import evaluate_all

    evaluate_all(cfg, io.inputs["processed"], io.inputs["reconstruction"], io.inputs["animation"], io.outputs)
