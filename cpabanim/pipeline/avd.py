"""Stage ``avd``: TPSMM's AVD network trained on the train stage's model, in a folder of its own; resumes from
its last checkpoint (docs/model.md, "AVD stage").

    cpabanim avd [--experiment tps] [--set train.avd_workers=4] [--restart]

It reads the train stage's complete checkpoint (never writes it) and writes
``{paths.checkpoints}/<experiment>/avd/seed<N>/last.pt``: that model with its AVD network trained, what animate
and the demo load (reconstruct needs no AVD network and reads the train stage's, so it runs beside this stage).
The checkpoint is written every ``train.avd_checkpoint_minutes`` while the network trains and a re-run resumes
from it, bit-exactly; the marker ``complete.json`` is written last. With ``train.avd_epochs: 0`` the folder holds
the trained model unchanged, recorded as such. On SIGTERM or the time-limit warning (SIGUSR1, SIGURG) it stops
after its step, writes the checkpoint and exits with code 3, after requeueing the SLURM job after a warning, as
training does (cpabanim/training/preemption.py; docs/model.md, "Preemption").
"""

from __future__ import annotations

from cpabanim.config.paths import AVD_FOLDER, CHECKPOINT_NAME, COMPLETE_MARKER
from cpabanim.config.typed import TRAIN_AVD, TRAIN_AVD_HOW_IT_RUNS
from cpabanim.pipeline.base import Output, Stage, StageIO

STAGE = Stage(
    name="avd",
    help="train the AVD network on the trained model (resumes from its last checkpoint)",
    module=__name__,
    # what the AVD network learns from: the trained model (the checkpoints input), the training videos as the data
    # keys make them, the seed, and TPSMM's AVD schedule (with the Adam betas)
    params=(
        "seed",
        "data.frame_size",
        "data.id_sampling",
        "data.augmentation",
        "train.betas",
        *(f"train.{key}" for key in TRAIN_AVD),
    ),
    settings=(
        "device",
        "train.log_every",
        "train.prefetch_factor",
        "train.requeue",
        *(f"train.{key}" for key in TRAIN_AVD_HOW_IT_RUNS),
    ),
    inputs=("processed", "checkpoints"),
    outputs=(
        Output(
            "avd_checkpoints",
            f"{{paths.checkpoints}}/{{experiment}}/{AVD_FOLDER}/seed{{seed}}",
            persist=True,
            marker=COMPLETE_MARKER,
        ),
    ),
    per_experiment=True,
    gpu=True,
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--restart", action="store_true", help="ignore the last AVD checkpoint (kept aside) and train from the start"
    )


def run(cfg, io: StageIO, restart: bool = False) -> None:
    """Train (or resume) the AVD network into ``io.outputs["avd_checkpoints"]``; exit 3 when a stop signal ended it."""
    from cpabanim.training.avd_stage import AVDJob, run_avd
    from cpabanim.training.preemption import exit_stopped, stop_on_signals

    job = AVDJob.of(
        cfg,
        source=io.inputs["checkpoints"] / CHECKPOINT_NAME,
        folder=io.outputs["avd_checkpoints"],
        processed=io.inputs["processed"],
    )
    with stop_on_signals() as stop:
        result = run_avd(job, stop, restart)
    if result["interrupted"]:
        exit_stopped(result["interrupted"], result["steps"], bool(cfg.train.requeue))
