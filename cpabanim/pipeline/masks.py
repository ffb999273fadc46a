"""Stage ``masks``: region-label maps of the training frames (SAM, or SLIC superpixels offline). Shared."""

from __future__ import annotations

import logging

from cpabanim.pipeline.base import Output, Stage, StageIO

log = logging.getLogger(__name__)

STAGE = Stage(
    name="masks",
    help="extract SAM (or offline superpixel) region masks for the training frames",
    module=__name__,
    params=("masks",),
    settings=("device",),
    inputs=("processed",),
    outputs=(Output("masks", "{paths.masks}"),),
    gpu=True,
)


def run(cfg, io: StageIO) -> None:
    from cpabanim import tracking
    from cpabanim.data.masks import extract_masks

    meta = extract_masks(cfg.masks, io.inputs["processed"], io.outputs["masks"], cfg.paths.weights, device=cfg.device)
    tracking.set_tags({"cpabanim.masks.source": meta["source"]})
    tracking.log_artifact(io.outputs["masks"] / "meta.json")
    log.info("masks (%s) ready for %d training videos in %s", meta["source"], len(meta["videos"]), io.outputs["masks"])
