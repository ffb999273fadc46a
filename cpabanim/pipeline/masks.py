"""Stage ``masks``: region-label maps of the training frames (SAM, or SLIC superpixels offline). Shared; sharded
(``masks.shards`` jobs and a gather: docs/data.md, "Shards")."""

from __future__ import annotations

import logging

from cpabanim.config.mappings import flatten
from cpabanim.pipeline.base import Output, Stage, StageIO, section_keys

log = logging.getLogger(__name__)

STAGE = Stage(
    name="masks",
    help="extract SAM (or offline superpixel) region masks for the training frames",
    module=__name__,
    params=section_keys("masks", exclude=("masks.batch_frames",)),
    settings=("device", "masks.batch_frames"),
    inputs=("processed",),
    outputs=(Output("masks", "{paths.masks}", gathered=("meta.json",)),),
    gpu=lambda params, available: masks_gpus(params),
    shards="masks.shards",
)


def masks_gpus(params) -> int:
    """SAM runs on a GPU; SLIC superpixels on the CPU (cpabanim/pipeline/resources.py)."""
    return int(flatten(params)["masks.source"] == "sam")


def run(cfg, io: StageIO, shard: int | None = None, gather: bool = False) -> None:
    from cpabanim import tracking
    from cpabanim.data import masks

    processed, out, weights = io.inputs["processed"], io.outputs["masks"], cfg.paths.weights
    if shard is not None:
        masks.extract_masks_shard(cfg.masks, processed, out, weights, shard, device=cfg.device)
        return
    if gather:
        meta = masks.gather_masks(cfg.masks, out, weights)
    else:
        meta = masks.extract_masks(cfg.masks, processed, out, weights, device=cfg.device)
    tracking.set_tags({"cpabanim.masks.source": meta["source"]})
    tracking.log_artifact(out / "meta.json")
    log.info("masks (%s) ready for %d training videos in %s", meta["source"], len(meta["videos"]["train"]), out)
