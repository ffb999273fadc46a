"""Stage ``train``: train one experiment's animation model; resumes from its last checkpoint (docs/model.md).

    cpabanim train [--experiment tps] [--set train.max_steps=200] [--restart]
    torchrun --nproc_per_node=2 -m cpabanim train ...        # multi-GPU (or multi-process CPU with gloo)

The checkpoint folder persists across re-runs (training resumes); Snakemake tracks the ``complete.json`` marker
that training writes last, inside that folder, so removing the folder makes training due again.
"""

from __future__ import annotations

import logging

from cpabanim.config.paths import CHECKPOINT_NAME, COMPLETE_MARKER
from cpabanim.config.typed import TRAIN_HOW_IT_RUNS
from cpabanim.pipeline.base import Output, Stage, StageIO, section_keys

log = logging.getLogger(__name__)

# how training is fed and compiled, not what it learns: changing them never re-runs training (their one home is
# cpabanim.config.typed, which the resume check reads too)
HOW_IT_RUNS = tuple(f"train.{key}" for key in TRAIN_HOW_IT_RUNS)

STAGE = Stage(
    name="train",
    help="train the animation model (resumes from the last checkpoint)",
    module=__name__,
    params=(
        "seed",
        "data.source",
        "data.frame_size",
        "data.id_sampling",
        "data.num_repeats",
        "data.augmentation",
        "model",
        "loss",
        *section_keys("train", exclude=HOW_IT_RUNS),
    ),
    # recorded in the checkpoint for the demo's face crop; the data they make reach training as the processed input
    settings=(
        "device",
        "data.folder.faces",
        "data.folder.margin",
        "data.folder.smooth_sigma",
        "data.folder.detect_every",
        *HOW_IT_RUNS,
    ),
    inputs=("processed", "masks"),
    outputs=(
        Output("checkpoints", "{paths.checkpoints}/{experiment}/seed{seed}", persist=True, marker=COMPLETE_MARKER),
    ),
    per_experiment=True,
    gpu=True,
)


def add_arguments(parser) -> None:
    parser.add_argument("--restart", action="store_true", help="ignore the last checkpoint and train from scratch")


def run(cfg, io: StageIO, restart: bool = False) -> None:
    """Train (or resume) into ``io.outputs["checkpoints"]``, then the AVD network; the completion marker is
    written last, by rank 0 only. The runtime (device, ranks, process group, precision) lives for both."""
    from cpabanim.files import write_json
    from cpabanim.runtime import Runtime
    from cpabanim.training.avd import train_avd
    from cpabanim.training.job import TrainingJob
    from cpabanim.training.loop import train

    folder = io.outputs["checkpoints"]
    marker = folder / COMPLETE_MARKER
    job = TrainingJob.of(
        cfg, checkpoint=folder / CHECKPOINT_NAME, processed=io.inputs["processed"], masks=io.inputs["masks"]
    )
    with Runtime.start(job.device, job.train.amp) as runtime:
        if runtime.is_main:
            marker.unlink(missing_ok=True)  # the marker must never outlive the run it marks
        result = train(job, restart=restart, runtime=runtime)
        log.info(
            "training stopped at step %d (epoch %d); checkpoint %s",
            result["step"],
            result["epoch"],
            result["checkpoint"],
        )
        if runtime.is_main and result["complete"]:
            if job.train.avd_epochs > 0:
                train_avd(job, runtime.device)
            write_json(
                marker, {"step": result["step"], "epoch": result["epoch"], "checkpoint": result["checkpoint"].name}
            )
