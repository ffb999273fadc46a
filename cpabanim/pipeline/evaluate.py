"""Stage ``evaluate``: the field's metrics of one experiment's reconstructions and animations (docs/evaluation.md);
sharded (``evaluate.shards`` jobs per run and a gather that writes the metrics: docs/evaluation.md, "Shards and
resume")."""

from __future__ import annotations

from pathlib import Path

from cpabanim.config.mappings import flatten
from cpabanim.pipeline.base import Output, Stage, StageIO, section_keys

RUN = "{paths.outputs}/{experiment}/seed{seed}"  # one (experiment, seed) run's outputs
HOW_IT_RUNS = ("evaluate.cache", "evaluate.cache_dir")  # where extractions are cached: never a reason to re-run
# what runs a network on the device; the pixel metrics, dlib, mediapipe and the synthetic moments run on the CPU
NETWORK_METRICS = ("lpips", "fid")
NETWORK_EXTRACTORS = ("face_alignment", "reid")


def networks_selected(params) -> bool:
    """Whether the evaluation runs a network: a network metric, or a network keypoint or identity extractor."""
    flat = flatten(params)
    extractors = (flat["evaluate.keypoints"], flat["evaluate.identity"])
    return bool(set(flat["evaluate.metrics"]) & set(NETWORK_METRICS) or set(extractors) & set(NETWORK_EXTRACTORS))


STAGE = Stage(
    name="evaluate",
    help="metrics (L1, PSNR, SSIM, AKD, MKR, AED) of reconstructions and animations",
    module=__name__,
    params=("seed", *section_keys("evaluate", exclude=HOW_IT_RUNS)),
    settings=("device", *HOW_IT_RUNS),
    inputs=("processed", "reconstruction", "animation"),
    outputs=(
        Output("evaluate_shards", f"{RUN}/shards/evaluate", holds_shards=True),
        Output("metrics", f"{RUN}/metrics.json", kind="file", cache=False, metric=True),
        Output("unavailable", f"{RUN}/metrics_unavailable.json", kind="file", cache=False),
        # not a DVC data plot: those need Vega from a CDN to render; the report's PNGs are DVC's plots instead
        Output("per_video", f"{RUN}/metrics_per_video.csv", kind="file", cache=False),
    ),
    per_experiment=True,
    # a GPU only for a network (cpabanim/pipeline/resources.py): dlib and the pixel metrics ask for none
    gpu=lambda params, available: int(networks_selected(params)),
    shards="evaluate.shards",
)


def cache_folder(cfg) -> Path | None:
    """The extraction cache: ``evaluate.cache_dir``, by default ``{paths.outputs}/.eval_cache``, one folder for every
    experiment and seed (the test videos' frames are extracted once); None when ``evaluate.cache`` is off."""
    from cpabanim.evaluation.records import CACHE_FOLDER

    if not cfg.evaluate.cache:
        return None
    return Path(cfg.evaluate.cache_dir or Path(cfg.paths.outputs) / CACHE_FOLDER)


def run(cfg, io: StageIO, shard: int | None = None, gather: bool = False) -> None:
    from cpabanim.evaluation.gather import evaluate_all, gather_evaluation
    from cpabanim.evaluation.records import EvaluateJob
    from cpabanim.pipeline.code import code_digest

    job = EvaluateJob(
        processed=io.inputs["processed"],
        reconstruction=io.inputs["reconstruction"],
        animation=io.inputs["animation"],
        shards_root=io.outputs["evaluate_shards"],
        outputs={name: io.outputs[name] for name in ("metrics", "unavailable", "per_video")},
        settings={k: v for k, v in cfg.evaluate.to_dict().items() if f"evaluate.{k}" not in HOW_IT_RUNS},
        cache_dir=cache_folder(cfg),
        # without a network nothing needs the GPU the job did not ask for (pixel metrics on the CPU)
        device=cfg.device if networks_selected(cfg.to_dict()) else "cpu",
        code=code_digest(STAGE.module),
        command=f"evaluate --experiment {cfg.experiment} --set seed={cfg.seed}",
    )
    if shard is not None:
        from cpabanim.evaluation.shards import evaluate_shard  # torch: the shard jobs only, not the gather

        evaluate_shard(job, shard)
    elif gather:
        gather_evaluation(job)
    else:
        evaluate_all(job)
