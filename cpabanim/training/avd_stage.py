"""The avd stage's run (docs/model.md, "AVD stage"): TPSMM's AVD training (:mod:`cpabanim.training.avd`) on the
train stage's model, in a folder of its own, resumable.

    job = AVDJob.of(cfg, source=train_folder / "last.pt", folder=avd_folder, processed=processed)
    result = run_avd(job, stop)

The folder holds one ``last.pt``, in the layout of the training checkpoint (``load_checkpoint``, animate and the
demo read it): the trained model with its AVD network trained, and the keypoint detector's BatchNorm statistics as
that training left them (TPSMM runs the detector in train mode). While the AVD network trains the file is written
every ``checkpoint_minutes`` (and ``checkpoint_every`` steps) with ``complete: false``, the AVD optimiser,
scheduler and progress; a run of the stage resumes from it and ends with the uninterrupted run's weights, bit for
bit. At the end it is written ``complete: true``, then the marker ``complete.json``. With ``epochs: 0`` it is the
trained model unchanged (``avd_trained: false``). The train stage's checkpoint is only ever read.

A ``last.pt`` counts for a run only when its ``avd_identity`` is the run's: the training checkpoint's sha256, the
seed, the data keys and the AVD schedule. Another one is kept aside as ``superseded/NNN.pt`` (as training keeps its
models, :func:`cpabanim.training.state.keep_superseded`) and the AVD network trains again from the trained model.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cpabanim.config.paths import CHECKPOINT_NAME, COMPLETE_MARKER
from cpabanim.config.typed import DataConfig, TrainConfig
from cpabanim.errors import CpabanimError
from cpabanim.training.avd import AVDTraining
from cpabanim.training.avd_schedule import AVDSchedule
from cpabanim.training.preemption import StopRequest

log = logging.getLogger(__name__)

OPTIMIZER_KEY = "avd"  # the AVD optimiser's and scheduler's entry in the checkpoint's optimizers / schedulers


@dataclass(frozen=True)
class AVDJob:
    """One run of the avd stage: what it learns (seed, schedule, the data keys of its dataset), the files it
    reads and writes, and how it runs (device, loader workers, checkpoint intervals, logging)."""

    seed: int
    schedule: AVDSchedule
    data: DataConfig
    source: Path  # the train stage's complete last.pt: read, never written
    folder: Path  # the avd stage's folder: last.pt, complete.json
    processed: Path  # the training videos
    device: str = "auto"
    workers: int | str = "auto"
    prefetch_factor: int = 2
    checkpoint_minutes: float = 10.0
    checkpoint_every: int = 0
    log_every: int = 10
    recorded: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, params: Mapping[str, Any], source: Path, folder: Path, processed: Path) -> AVDJob:
        """From the avd stage's view of the params (``seed``, ``device``, ``data``, ``train``)."""
        train = TrainConfig.from_mapping(params["train"])
        return cls(
            seed=int(params["seed"]),
            schedule=AVDSchedule.of(train),
            data=DataConfig.from_mapping(params["data"]),
            source=Path(source),
            folder=Path(folder),
            processed=Path(processed),
            device=str(params.get("device", "auto")),
            workers=train.avd_workers,
            prefetch_factor=train.prefetch_factor,
            checkpoint_minutes=float(train.avd_checkpoint_minutes),
            checkpoint_every=int(train.avd_checkpoint_every),
            log_every=train.log_every,
            recorded=copy.deepcopy(params),  # a frozen Section deep-copies to a plain dict
        )

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_NAME

    def identity(self, source_sha256: str) -> dict[str, Any]:
        """What the trained AVD network depends on: a checkpoint with another identity is another run's."""
        data = {key: self.data.to_dict()[key] for key in ("frame_size", "id_sampling", "augmentation")}
        schedule = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.schedule).items()}
        return {"source": source_sha256, "seed": self.seed, "data": data, "schedule": schedule}


def run_avd(job: AVDJob, stop: StopRequest | None = None, restart: bool = False, dataset=None) -> dict[str, Any]:
    """Train (or resume, or find trained) the AVD network of ``job`` into ``job.folder``, under the folder's lock
    (one AVD trainer per folder); the marker is removed first and written last. ``stop``: the process's stop
    signals (:func:`cpabanim.training.preemption.stop_on_signals`): the training stops after the step in which
    one arrived, writes its checkpoint and the ``interrupted.json`` record. ``restart``: ignore the folder's
    checkpoint (it is kept aside). ``dataset``: the training videos, one pass (None: ``job.processed``'s, as the
    data keys make them; tests pass their own). Returns {"steps", "epochs", "trained", "checkpoint",
    "interrupted": the signal's name or None}."""
    from cpabanim.files import write_json
    from cpabanim.training.preemption import clear_interrupted
    from cpabanim.training.state import checkpoint_folder_lock

    with checkpoint_folder_lock(job.folder, is_main=True):
        marker = job.folder / COMPLETE_MARKER
        marker.unlink(missing_ok=True)  # the marker must never outlive the run it marks
        clear_interrupted(job.folder)
        result = train_in_folder(job, stop, restart, dataset)
        if not result["interrupted"]:
            record = {"step": result["steps"], "epoch": result["epochs"], "avd_trained": result["trained"]}
            write_json(marker, {**record, "checkpoint": CHECKPOINT_NAME})
        return result


def train_in_folder(job: AVDJob, stop: StopRequest | None, restart: bool, dataset=None) -> dict[str, Any]:
    """:func:`run_avd` under the lock: read the training checkpoint, find this run's checkpoint in the folder,
    train what is left, write the complete checkpoint."""
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.checkpoint import load_model_state
    from cpabanim.models.full import AnimationModel
    from cpabanim.runtime import resolve_device

    source, digest = read_source(job.source)
    identity = job.identity(digest)
    saved = own_checkpoint(job, identity, restart)
    if saved is not None and saved.get("complete"):
        log.info("the AVD network of %s is trained already: %s", job.source, job.checkpoint)
        return outcome(job, saved.get("avd_progress") or {}, bool(saved.get("avd_trained")), None)
    device = resolve_device(job.device, 0)
    model = AnimationModel(ModelConfig.from_mapping(source["model_params"])).to(device)
    load_model_state(model, (saved or source)["model"], job.checkpoint if saved else job.source)
    training = AVDTraining(model, job.schedule, job.seed)
    if saved is not None:
        training.load(
            {
                "optimizer": saved["optimizers"][OPTIMIZER_KEY],
                "scheduler": saved["schedulers"][OPTIMIZER_KEY],
                "progress": saved["avd_progress"],
            }
        )
        log.info("resuming the AVD training from %s at step %d", job.checkpoint, training.progress.step)
    if not training.done and fit(job, training, device, (source, identity), stop, dataset):
        return outcome(job, asdict(training.progress), True, report_stop(job, training, stop))
    save(job, training, source, identity, complete=True)
    trained = job.schedule.epochs > 0
    if trained:
        p = training.progress
        log.info(
            "AVD network trained: %d steps, %d epochs, last loss %.4g", p.step, p.epoch, float(training.loss.detach())
        )
    else:
        log.info("train.avd_epochs is 0: %s is the trained model, its AVD network not trained", job.checkpoint)
    return outcome(job, asdict(training.progress), trained, None)


def read_source(path: Path) -> tuple[dict[str, Any], str]:
    """The training checkpoint (complete) and its sha256; a file replaced while it was read is refused (a
    training writing it at the same time)."""
    from cpabanim.files import sha256_file
    from cpabanim.models.checkpoint import read_checkpoint

    before = _file_version(path)
    digest = sha256_file(path)
    state = read_checkpoint(path)
    if _file_version(path) != before:
        raise CpabanimError(f"{path} changed while the avd stage read it: let `cpabanim train` finish, then run again")
    if not state.get("complete"):
        raise CpabanimError(f"{path} is not complete: finish `cpabanim train` before training the AVD network")
    return state, digest


def _file_version(path: Path) -> tuple[int, int, int]:
    """What an atomic replace or a write changes: the inode, the size and the modification time."""
    info = os.stat(path)
    return info.st_ino, info.st_size, info.st_mtime_ns


def own_checkpoint(job: AVDJob, identity: dict[str, Any], restart: bool) -> dict[str, Any] | None:
    """The folder's ``last.pt`` when it belongs to this run (its identity, no ``restart``), else None: another
    run's is kept aside first (``superseded/NNN.pt``, with the keys that differ)."""
    from cpabanim.config.mappings import flatten
    from cpabanim.models.checkpoint import read_checkpoint
    from cpabanim.training.state import keep_superseded

    if not job.checkpoint.is_file():
        return None
    saved = read_checkpoint(job.checkpoint)
    if saved.get("avd_identity") == identity and not restart:
        return saved
    old, new = flatten(saved.get("avd_identity") or {}), flatten(identity)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k)) or ["--restart"]
    kept = keep_superseded(job.checkpoint, saved, changed)
    log.warning(
        "%s is another AVD training's (%s differ): kept as %s; training the AVD network from %s",
        job.checkpoint,
        ", ".join(changed[:8]),
        kept,
        job.source,
    )
    return None


def fit(
    job: AVDJob,
    training: AVDTraining,
    device: torch.device,
    origin: tuple[Mapping[str, Any], dict[str, Any]],
    stop: StopRequest | None,
    dataset=None,
) -> bool:
    """Train to the end of the schedule, logging every ``log_every`` steps and writing the checkpoint every
    ``checkpoint_minutes`` / ``checkpoint_every`` steps; -> True when a stop signal ended it (checkpoint written).
    ``origin``: the training checkpoint and the run's identity (what each checkpoint carries)."""
    from cpabanim import tracking
    from cpabanim.data.loader import resolve_num_workers
    from cpabanim.training.videos import frames_dataset

    if dataset is None:  # the stage makes its own repeats: one pass over the videos
        dataset = frames_dataset(job.processed, job.data, num_repeats=1)
    source, identity = origin
    last_save = time.monotonic()

    def after_step(t: AVDTraining) -> bool:
        nonlocal last_save
        step = t.progress.step
        if step % job.log_every == 0 or t.done:
            tracking.log_metrics({"loss/avd": float(t.loss.detach()), "lr": t.step_lr}, step=step)
        if t.done:
            return False  # the complete checkpoint follows
        stopping = stop is not None and stop.requested
        timed = job.checkpoint_minutes > 0 and time.monotonic() - last_save >= 60 * job.checkpoint_minutes
        if stopping or timed or (job.checkpoint_every and step % job.checkpoint_every == 0):
            save(job, t, source, identity, complete=False)
            last_save = time.monotonic()
        return stopping

    return training.fit(
        dataset,
        device,
        workers=resolve_num_workers(job.workers),
        prefetch_factor=job.prefetch_factor,
        after_step=after_step,
    )


def save(job: AVDJob, training: AVDTraining, source: Mapping[str, Any], identity: dict[str, Any], complete: bool):
    """Write the folder's ``last.pt`` atomically: the model with the AVD training's state, the training
    checkpoint's counters, RNG states and process count, and its params with the avd stage's merged in (what
    the model was made with: the demo reads its data section)."""
    from cpabanim.config.mappings import deep_merge
    from cpabanim.models.checkpoint import save_checkpoint

    extra = {
        "world": int(source.get("world", 1)),  # of the main training (cpabanim/training/state.py)
        "avd_schedule": identity["schedule"],
        "avd_trained": job.schedule.epochs > 0,
        "avd_steps": training.progress.step,
        "avd_progress": asdict(training.progress),
        "avd_identity": identity,
        "avd_source": str(job.source),
    }
    return save_checkpoint(
        job.checkpoint,
        training.model,
        {OPTIMIZER_KEY: training.optimizer},
        {OPTIMIZER_KEY: training.scheduler},
        source["step"],
        source["epoch"],
        deep_merge(source.get("params") or {}, job.recorded),
        source.get("rng_state") or {},
        complete=complete,
        extra=extra,
    )


def report_stop(job: AVDJob, training: AVDTraining, stop: StopRequest) -> str:
    """After the checkpoint of a stopped run: the ``interrupted.json`` record and the one log line."""
    from cpabanim.training.preemption import report_interrupted

    p = training.progress
    return report_interrupted(job.folder, stop.level, p.step, p.epoch, is_main=True)


def outcome(job: AVDJob, progress: Mapping[str, Any], trained: bool, interrupted: str | None) -> dict[str, Any]:
    """What :func:`run_avd` returns (see there)."""
    steps, epochs = int(progress.get("step", 0)), int(progress.get("epoch", 0))
    return {
        "steps": steps,
        "epochs": epochs,
        "trained": trained,
        "checkpoint": job.checkpoint,
        "interrupted": interrupted,
    }
