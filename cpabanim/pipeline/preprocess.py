"""Stage ``preprocess``: raw videos -> square, lossless frame archives in shards, and the index ``manifest.json``.
Shared by every experiment; sharded (``data.shards`` jobs and a gather: docs/data.md, "Shards")."""

from __future__ import annotations

import logging

from cpabanim.data.layout import VIDEO_KEYS
from cpabanim.pipeline.base import Output, Stage, StageIO

log = logging.getLogger(__name__)

STAGE = Stage(
    name="preprocess",
    help="turn raw videos into the train/test dataset: frame archives in shards, and their index",
    module=__name__,
    params=(*(f"data.{key}" for key in VIDEO_KEYS), "data.shards"),
    inputs=("raw",),
    outputs=(Output("processed", "{paths.processed}", gathered=("manifest.json", "names.json")),),
    shards="data.shards",
)


def run(cfg, io: StageIO, shard: int | None = None, gather: bool = False) -> None:
    from cpabanim import tracking
    from cpabanim.data import preprocess

    out = io.outputs["processed"]
    if shard is not None:
        preprocess.preprocess_shard(cfg.data, cfg.data.seed, io.inputs["raw"], out, shard)
        return
    if gather:
        manifest = preprocess.gather(cfg.data, cfg.data.seed, out)
    else:
        manifest = preprocess.preprocess(cfg.data, cfg.data.seed, io.inputs["raw"], out)
    counts = {split: len(manifest["videos"][split]) for split in preprocess.SPLITS}
    tracking.log_metrics({f"videos_{k}": v for k, v in counts.items()} | {"skipped": len(manifest["skipped"])})
    tracking.log_artifact(out / "manifest.json")
    tracking.log_artifact(out / "names.json")  # the original of every name made safe (docs/data.md)
    log.info(
        "preprocess done: %d train / %d test videos, %d skipped",
        counts["train"],
        counts["test"],
        len(manifest["skipped"]),
    )
