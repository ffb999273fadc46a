"""Stage ``evaluate``: the field's metrics of one experiment's reconstructions and animations (docs/evaluation.md)."""

from __future__ import annotations

from cpabanim.pipeline.base import Output, Stage, StageIO

RUN = "{paths.outputs}/{experiment}/seed{seed}"  # one (experiment, seed) run's outputs

STAGE = Stage(
    name="evaluate",
    help="metrics (L1, PSNR, SSIM, AKD, MKR, AED) of reconstructions and animations",
    module=__name__,
    params=("evaluate",),
    settings=("device",),
    inputs=("processed", "reconstruction", "animation"),
    outputs=(
        Output("metrics", f"{RUN}/metrics.json", kind="file", cache=False, metric=True),
        Output("unavailable", f"{RUN}/metrics_unavailable.json", kind="file", cache=False),
        # not a DVC data plot: those need Vega from a CDN to render; the report's PNGs are DVC's plots instead
        Output("per_video", f"{RUN}/metrics_per_video.csv", kind="file", cache=False),
    ),
    per_experiment=True,
    gpu=True,
)


def run(cfg, io: StageIO) -> None:
    from cpabanim.evaluation.evaluate import evaluate_all

    e = cfg.evaluate
    evaluate_all(
        processed=io.inputs["processed"],
        reconstruction=io.inputs["reconstruction"],
        animation=io.inputs["animation"],
        metrics_json=io.outputs["metrics"],
        unavailable_json=io.outputs["unavailable"],
        per_video_csv=io.outputs["per_video"],
        metrics=list(e.metrics),
        keypoints=e.keypoints,
        identity=e.identity,
        extractor_options={
            "face_upsample": e.face_upsample,
            "pose_min_visibility": e.pose_min_visibility,
            "reid_weights": e.reid_weights,
        },
        cache=e.cache,
        cache_dir=e.cache_dir,
        device=cfg.device,
    )
