"""Stage ``preprocess``: raw videos -> square, lossless train/test frame folders and ``manifest.json``. Shared."""

from __future__ import annotations

import logging

from cpabanim.pipeline.base import Output, Stage, StageIO

log = logging.getLogger(__name__)

STAGE = Stage(
    name="preprocess",
    help="turn raw videos into the train/test frame dataset",
    module=__name__,
    params=(
        "data.seed",
        "data.source",
        "data.frame_size",
        "data.synthetic",
        "data.folder",
        "data.metadata",
        "data.source_dir",
    ),
    inputs=("raw",),
    outputs=(Output("processed", "{paths.processed}"),),
)


def run(cfg, io: StageIO) -> None:
    from cpabanim import tracking
    from cpabanim.data.preprocess import SPLITS, preprocess

    manifest = preprocess(cfg.data, cfg.data.seed, io.inputs["raw"], io.outputs["processed"])
    counts = {split: len(manifest["videos"][split]) for split in SPLITS}
    tracking.log_metrics({f"videos_{k}": v for k, v in counts.items()} | {"skipped": len(manifest["skipped"])})
    tracking.log_artifact(io.outputs["processed"] / "manifest.json")
    tracking.log_artifact(io.outputs["processed"] / "names.json")  # the original of every name made safe (docs/data.md)
    log.info(
        "preprocess done: %d train / %d test videos, %d skipped",
        counts["train"],
        counts["test"],
        len(manifest["skipped"]),
    )
