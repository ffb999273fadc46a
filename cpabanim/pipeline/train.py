"""Stage ``train``: train one experiment's animation model; resumes from its last checkpoint (docs/model.md).

    cpabanim train [--experiment tps] [--set train.max_steps=200] [--restart]
    cpabanim train --set train.processes=2                   # starts 2 processes through torchrun (gloo on CPU)
    torchrun --nproc_per_node=2 -m cpabanim train ...        # the same, by hand

The checkpoint folder persists across re-runs (training resumes); Snakemake tracks the ``complete.json`` marker
that training writes last, inside that folder, so removing the folder makes training due again. The AVD network
trains after it, in the avd stage (cpabanim/pipeline/avd.py); this stage only checks, before training, that the
AVD schedule can make a batch of the training videos.

With ``train.processes`` above 1 (auto: one per visible GPU), or on several nodes of a SLURM allocation, this
process launches the training processes and waits for them (cpabanim/training/launch.py; docs/model.md,
"Several processes"); they log into its MLflow run. On SIGTERM or the time-limit warning (SIGUSR1, SIGURG)
training stops after its step, writes the checkpoint and the stage exits with code 3
(cpabanim/training/preemption.py; docs/model.md, "Preemption"), after requeueing the SLURM job after a warning.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cpabanim.config.mappings import flatten
from cpabanim.config.paths import CHECKPOINT_NAME, COMPLETE_MARKER
from cpabanim.config.typed import TRAIN_AVD, TRAIN_AVD_HOW_IT_RUNS, TRAIN_HOW_IT_RUNS, TrainConfig
from cpabanim.pipeline.base import Output, Stage, StageIO, section_keys

if TYPE_CHECKING:
    from cpabanim.runtime import Runtime
    from cpabanim.training.job import TrainingJob
    from cpabanim.training.preemption import StopRequest

log = logging.getLogger(__name__)

# how training is fed and compiled, not what it learns: changing them never re-runs training (their one home is
# cpabanim.config.typed, which the resume check reads too)
HOW_IT_RUNS = tuple(f"train.{key}" for key in (*TRAIN_HOW_IT_RUNS, *TrainConfig.HOW_IT_LAUNCHES))
# the avd stage's keys: never a reason to re-run training; it reads the three that say whether the AVD schedule can
# make a batch of the training videos, to refuse a schedule that cannot before training (check_avd_inputs)
AVD_KEYS = tuple(f"train.{key}" for key in (*TRAIN_AVD, *TRAIN_AVD_HOW_IT_RUNS))
AVD_CHECKED = ("train.avd_epochs", "train.avd_repeats", "train.avd_batch_size")

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
        *section_keys("train", exclude=(*HOW_IT_RUNS, *AVD_KEYS)),
    ),
    # recorded in the checkpoint for the demo's face crop; the data they make reach training as the processed input
    settings=(
        "device",
        "data.folder.faces",
        "data.folder.margin",
        "data.folder.smooth_sigma",
        "data.folder.detect_every",
        *HOW_IT_RUNS,
        *AVD_CHECKED,
    ),
    inputs=("processed", "masks"),
    outputs=(
        Output("checkpoints", "{paths.checkpoints}/{experiment}/seed{seed}", persist=True, marker=COMPLETE_MARKER),
    ),
    per_experiment=True,
    gpu=lambda params, available: train_gpus(params, available),
)


def train_gpus(params, available: int | None) -> int:
    """GPUs of one training job (cpabanim/pipeline/resources.py): one per process, ``train.processes``; with ``auto``
    every GPU of this machine, one on a cluster's node (the profile's ``gpu`` asks for more)."""
    processes = flatten(params)["train.processes"]
    return max(available or 1, 1) if processes == "auto" else int(processes)


def add_arguments(parser) -> None:
    parser.add_argument("--restart", action="store_true", help="ignore the last checkpoint and train from scratch")


def run(cfg, io: StageIO, restart: bool = False) -> None:
    """Train (or resume) into ``io.outputs["checkpoints"]``; the completion marker is written last, by rank 0
    only. The stop signals are handled from before the set-up (a signal then stops training before its first step).
    With several processes to run and no torchrun around this process, it launches them instead."""
    from cpabanim.runtime import Runtime
    from cpabanim.training.job import TrainingJob
    from cpabanim.training.launch import resolve_processes, slurm_nodes, under_torchrun, visible_gpus
    from cpabanim.training.preemption import stop_on_signals

    folder = io.outputs["checkpoints"]
    job = TrainingJob.of(
        cfg, checkpoint=folder / CHECKPOINT_NAME, processed=io.inputs["processed"], masks=io.inputs["masks"]
    ).without_recorded(AVD_CHECKED)  # read for the check only: the avd stage's checkpoint records what it ran
    if not under_torchrun(os.environ):
        gpus = visible_gpus() if job.train.processes == "auto" or job.device != "cpu" else 0
        processes = resolve_processes(job.train.processes, job.device, gpus)
        if processes > 1 or slurm_nodes(os.environ) > 1:
            launch(job, folder, processes)
            return
    with stop_on_signals() as stop, Runtime.start(job.device, job.train.amp) as runtime:
        train_here(job, folder, runtime, stop, restart)


def train_here(job: TrainingJob, folder: Path, runtime: Runtime, stop: StopRequest, restart: bool) -> None:
    """This process's part of the training (all of it in a one-process job) and the marker.

    The checkpoint folder's lock is held from before training to after the marker (rank 0), so that a second
    ``cpabanim train`` started between the two is refused. The AVD schedule is checked against the training
    videos before anything trains."""
    from cpabanim.training.state import checkpoint_folder_lock

    check_avd_inputs(job)
    with checkpoint_folder_lock(folder, runtime.is_main):
        _train_and_mark(job, folder, runtime, stop, restart)


def check_avd_inputs(job: TrainingJob, dataset=None) -> None:
    """Refuse, before training, an AVD batch the training videos cannot fill (``train.avd_batch_size`` above
    videos x ``train.avd_repeats``): found by the avd stage after training, it would throw the whole run's time
    away. ``dataset``: the avd stage's one pass over the videos (None: built from ``job.processed`` as it will
    be)."""
    if job.train.avd_epochs <= 0:
        return
    from cpabanim.training.avd_schedule import AVDSchedule, check_avd_batch
    from cpabanim.training.loop import build_dataset

    videos = dataset if dataset is not None else build_dataset(job, needs_masks=False, num_repeats=1)
    check_avd_batch(len(videos), AVDSchedule.of(job.train))


def _train_and_mark(job: TrainingJob, folder: Path, runtime: Runtime, stop: StopRequest, restart: bool) -> None:
    """Train (or resume), then the marker: :func:`train_here` under the folder's lock."""
    from cpabanim.files import write_json
    from cpabanim.training.launch import LAUNCHED_ENV
    from cpabanim.training.loop import train
    from cpabanim.training.preemption import clear_interrupted

    marker = folder / COMPLETE_MARKER
    if runtime.is_main:
        marker.unlink(missing_ok=True)  # the marker must never outlive the run it marks
        clear_interrupted(folder)
        if runtime.distributed:
            log.info(
                "training in %d processes (%s)", runtime.world, "nccl" if runtime.device.type == "cuda" else "gloo"
            )
    result = train(job, restart=restart, runtime=runtime, stop=stop)
    path = result["checkpoint"]
    if runtime.is_main:
        log.info("training stopped at step %d (epoch %d); checkpoint %s", result["step"], result["epoch"], path)
    if result["interrupted"] and LAUNCHED_ENV in os.environ:
        return  # the launcher reads the record and exits 3; a worker's exit code 3 would only make torchrun cry failure
    if result["interrupted"]:
        stopped(job, result["interrupted"], result["step"], requeue=runtime.is_main)
    if runtime.is_main and result["complete"]:
        write_json(marker, {"step": result["step"], "epoch": result["epoch"], "checkpoint": result["checkpoint"].name})


def stopped(job: TrainingJob, by: str, step: int, requeue: bool) -> None:
    """Training stopped on signal ``by`` with its checkpoint written: requeue the SLURM job when that is asked for
    and this process is the one to do it (the outermost), then exit with code 3 (preemption.exit_stopped)."""
    from cpabanim.training.preemption import exit_stopped

    exit_stopped(by, step, job.train.requeue, requeue)


def launch(job: TrainingJob, folder: Path, processes: int) -> None:
    """Start the training processes (torchrun; srun across nodes), wait for them and end as they did: return when
    they completed, exit 3 when they stopped on a signal, a one-line error when one failed."""
    from cpabanim.errors import CpabanimError
    from cpabanim.pipeline.journal import JOURNAL_ENV
    from cpabanim.training.launch import LAUNCHED_ENV, launch_command, run_processes, train_argv
    from cpabanim.training.preemption import clear_interrupted, read_interrupted

    command = launch_command(processes, train_argv(sys.argv[1:]), os.environ)
    log.info("starting the training processes: %s", " ".join(command))
    clear_interrupted(folder)  # only a record these processes write counts
    # the workers say nothing in the Snakemake run's journal (cpabanim/pipeline/journal.py): one that stopped on a
    # signal returns normally, and only this process knows that they all completed
    environ = {k: v for k, v in os.environ.items() if k != JOURNAL_ENV}
    code = run_processes(command, {**environ, **tracking_env(), LAUNCHED_ENV: "1"})
    record = read_interrupted(folder)
    if record:
        stopped(job, str(record.get("signal")), int(record.get("step", 0)), requeue=True)
    if code != 0:
        raise CpabanimError(
            f"training failed in one of its processes (exit code {code} from {command[0]}); the log above has the error"
        )


def tracking_env() -> dict[str, str]:
    """What lets the launched processes log into this stage's MLflow run (one run, not one per process): its id
    (``MLFLOW_RUN_ID``: their stage run resumes it) and this pipeline invocation's id (their parent run is ours)."""
    mlflow = sys.modules.get("mlflow")
    run = mlflow.active_run() if mlflow is not None else None
    if run is None:
        return {}
    from cpabanim.tracking.provenance import PIPELINE_RUN_ENV, pipeline_id

    return {"MLFLOW_RUN_ID": run.info.run_id, PIPELINE_RUN_ENV: pipeline_id()}
