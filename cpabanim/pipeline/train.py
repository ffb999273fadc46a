"""Stage ``train``: train one experiment's animation model; resumes from its last checkpoint (docs/model.md).

    cpabanim train [--experiment tps] [--set train.max_steps=200] [--restart]
    torchrun --nproc_per_node=2 -m cpabanim train ...        # multi-GPU (or multi-process CPU with gloo)

The checkpoint folder persists across re-runs (training resumes); Snakemake tracks the ``complete.json`` marker
that training writes last, inside that folder, so removing the folder makes training due again.
"""

from __future__ import annotations

import logging
import os

from cpabanim.config.paths import COMPLETE_MARKER
from cpabanim.pipeline.base import Output, Stage, StageIO, section_keys

log = logging.getLogger(__name__)

# how training is fed and compiled, not what it learns: changing them never re-runs training
HOW_IT_RUNS = ("train.num_workers", "train.prefetch_factor", "train.channels_last", "train.compile")

STAGE = Stage(
    name="train",
    help="train the animation model (resumes from the last checkpoint)",
    module=__name__,
    params=("seed", "data.source", "data.frame_size", "data.id_sampling", "data.num_repeats", "data.augmentation",
            "model", "loss", *section_keys("train", exclude=HOW_IT_RUNS)),
    # recorded in the checkpoint for the demo's face crop; the data they make reach training as the processed input
    settings=("device", "data.folder.faces", "data.folder.margin", "data.folder.smooth_sigma", "data.folder.detect_every",
              *HOW_IT_RUNS),
    inputs=("processed", "masks"),
    outputs=(Output("checkpoints", "{paths.checkpoints}/{experiment}", persist=True, marker=COMPLETE_MARKER),),
    per_experiment=True,
    gpu=True,
)


def add_arguments(parser) -> None:
    parser.add_argument("--restart", action="store_true", help="ignore the last checkpoint and train from scratch")


def run(cfg, io: StageIO, restart: bool = False) -> None:
    """Train (or resume), then the AVD network; the completion marker is written last, by rank 0 only."""
    from cpabanim.files import write_json
    from cpabanim.training.loop import train
    from cpabanim.training.avd import train_avd

    marker = io.outputs["checkpoints"] / COMPLETE_MARKER
    if int(os.environ.get("RANK", "0")) == 0:
        marker.unlink(missing_ok=True)  # the marker must never outlive the run it marks
    result = train(cfg, restart=restart)
    log.info("training stopped at step %d (epoch %d); checkpoint %s", result["step"], result["epoch"],
             result["checkpoint"])
    if int(os.environ.get("RANK", "0")) == 0 and result["complete"]:
        if cfg.train.avd_epochs > 0:
            train_avd(cfg)
        write_json(marker, {"step": result["step"], "epoch": result["epoch"], "checkpoint": result["checkpoint"].name})
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
