"""Stage ``download``: the raw videos of ``data.source`` (docs/data.md). Shared by every experiment.

The raw folder is never deleted by a re-run (``persist``): what is downloaded and verified is not fetched again.
"""

from __future__ import annotations

import logging

from cpabanim.pipeline.base import Output, Stage, StageIO

log = logging.getLogger(__name__)

STAGE = Stage(
    name="download",
    help="fetch (or, for the synthetic default, record) the raw videos of data.source",
    module=__name__,
    params=(
        "data.source",
        "data.folder.dir",
        "data.folder.test_fraction",
        "data.metadata",
        "data.youtube_url",
        "data.source_dir",
        "data.archive",
    ),
    outputs=(Output("raw", "{paths.raw}", persist=True, marker="{data.source}/manifest.json"),),
)


def run(cfg, io: StageIO) -> None:
    from cpabanim.data.download import download
    from cpabanim.tracking import log_metrics

    manifest = download(cfg.data, io.outputs["raw"])
    log_metrics({"fetched": len(manifest.get("fetched", [])), "failed": len(manifest.get("failed", []))})
    log.info(
        "download of %s done: %d item(s) fetched, %d failed",
        cfg.data.source,
        len(manifest.get("fetched", [])),
        len(manifest.get("failed", [])),
    )
