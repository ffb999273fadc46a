"""The training loop (docs/model.md, "Trainer"): build, resume or restart, epochs, checkpoint, log.

``train(job, runtime=...)`` runs or resumes the :class:`~cpabanim.training.job.TrainingJob` with the paper's
schedule (docs/model.md, "Trainer"), writing ``job.checkpoint``. The :class:`~cpabanim.runtime.Runtime` (device,
ranks, precision) is the caller's; without one, ``train`` opens one for the call. It opens no MLflow run: the
CLI runs every stage inside one, and ``cpabanim.tracking.log_*`` do nothing when none is open.

Determinism: batches come from ``cpabanim.data.loader`` (a (seed, epoch) permutation, each item drawn from its
own generator seeded by (seed, epoch, index)), and every step re-seeds the model-side randomness (transform
dropout, equivariance TPS) from (seed, step). Any worker count and a resume therefore give the same parameters
as one uninterrupted run (bit-exact on CPU); each process takes its own batch, so the process count does not.

Stopping on a signal (docs/model.md, "Preemption"): given a ``stop`` request, ``train`` stops after the step in
which a stop signal arrived (every rank after the same one), writes the checkpoint, reports the signal.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cpabanim.data.loader import EpochBatchSampler, make_loader, resolve_num_workers, step_seed, to_device
from cpabanim.errors import ConfigError, CpabanimError, DataError
from cpabanim.progress import progress_bar
from cpabanim.runtime import Runtime
from cpabanim.training.job import TrainingJob
from cpabanim.training.preemption import StopRequest, agreed_stop, ignore_stop_signals, report_interrupted
from cpabanim.training.schedule import dropout_probability, total_steps
from cpabanim.training.state import Progress, checkpoint_folder_lock, resume_or_restart, write_checkpoint
from cpabanim.training.step import Optimization, TrainingStep

log = logging.getLogger(__name__)

COMPILED_NETWORKS = ("kp_detector", "bg_predictor", "dense_motion", "generator")


@dataclass
class Run:
    """Everything one training call needs, built once by :func:`train` (:func:`assemble`)."""

    job: TrainingJob
    runtime: Runtime
    model: nn.Module
    step_module: nn.Module
    optimization: Optimization
    sampler: EpochBatchSampler
    loader: torch.utils.data.DataLoader
    total_steps: int
    progress: Progress = field(default_factory=Progress)
    stop: StopRequest | None = None  # the stop signals this process received (None: library use, never stops)
    stopped_by: int = 0  # the agreed stop signal's level (preemption.STOP_SIGNALS), once the ranks agreed to stop
    last_losses: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None  # of the last step, not yet read
    timings: dict[str, float] = field(default_factory=lambda: {"data_s": 0.0, "step_s": 0.0, "steps": 0})


# ------------------------------------------------------------------------------------------------ build


def build_dataset(job: TrainingJob, needs_masks: bool, num_repeats: int | None = None):
    """The configured FramesDataset over ``job.processed`` (with ``job.masks`` when the semantic loss is on):
    :func:`cpabanim.training.videos.frames_dataset`."""
    from cpabanim.training.videos import frames_dataset

    return frames_dataset(job.processed, job.data, job.masks if needs_masks else None, num_repeats)


def seed_everything(seed: int) -> None:
    """The global generators (torch, numpy, random): the model's initialisation draws from them."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def build_model(job: TrainingJob, device: torch.device):
    """(AnimationModel, GeneratorObjective) on ``device``, with the optional channels_last layout and compile."""
    from cpabanim.losses.objective import GeneratorObjective
    from cpabanim.models.full import AnimationModel

    try:
        model = AnimationModel(job.model).to(device)
    except ValueError as exc:  # inconsistent sizes (e.g. scale_factor vs hourglass depth)
        raise ConfigError(f"model: {exc}") from exc
    if job.train.init_from:
        warm_start_from(model, Path(job.train.init_from))
    objective = GeneratorObjective(job.loss, str(job.weights)).to(device)
    if job.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if job.train.compile:
        for name in COMPILED_NETWORKS:  # in place: parameter names (and checkpoints) stay the same
            if getattr(model, name, None) is not None:
                getattr(model, name).compile()
    return model, objective


def warm_start_from(model, path: Path) -> None:
    """``train.init_from``: start from what fits of a cpabanim or TPSMM checkpoint (cpabanim/models/tpsmm_import.py);
    a resumed run then loads its own checkpoint over it."""
    from cpabanim import tracking
    from cpabanim.models.tpsmm_import import warm_start

    if not path.is_file():
        raise ConfigError(f"train.init_from: {path} not found")
    report = warm_start(model, path)
    counts = {kind: len(names) for kind, names in report.items()}
    log.info(
        "warm start from %s: %d tensors loaded, %d sliced, %d fresh, %d unused",
        path,
        counts["loaded"],
        counts["sliced"],
        counts["fresh"],
        counts["unused"],
    )
    tracking.log_metrics({f"init_from/{kind}": count for kind, count in counts.items()})


def check_dataset_size(dataset, job: TrainingJob, runtime: Runtime) -> None:
    if len(dataset) < job.train.batch_size * runtime.world:
        raise DataError(
            f"the training set has {len(dataset)} items, fewer than batch_size x processes "
            f"({job.train.batch_size} x {runtime.world})"
        )


def assemble(
    job: TrainingJob, runtime: Runtime, model: nn.Module, objective: nn.Module, optimization: Optimization, dataset
) -> Run:
    """The step module (DDP-wrapped in a multi-process job), the sampler and the DataLoader around ``model``."""
    tp = job.train
    step_module: nn.Module = TrainingStep(model, objective)
    if runtime.distributed:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(
            step_module,
            device_ids=[runtime.local_rank] if runtime.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    sampler = EpochBatchSampler(len(dataset), tp.batch_size, job.seed, runtime.rank, runtime.world)
    workers = resolve_num_workers(tp.num_workers, runtime.local_world)
    loader = make_loader(dataset, sampler, workers, runtime.device, tp.prefetch_factor)
    loader.worker_init_fn = ignore_stop_signals  # batch workers never die of the job's SIGTERM (preemption.py)
    return Run(
        job, runtime, model, step_module, optimization, sampler, loader, total_steps(sampler.batches_per_epoch, tp)
    )


def build(job: TrainingJob, runtime: Runtime, dataset=None) -> Run:
    """Seed, model, objective, dataset, optimisers, DDP wrapper, sampler and DataLoader of one training call
    (what :func:`train` does before its epochs; ``cpabanim bench train --profile`` uses it alone)."""
    seed_everything(job.seed)
    model, objective = build_model(job, runtime.device)
    dataset = build_dataset(job, objective.needs_masks) if dataset is None else dataset
    check_dataset_size(dataset, job, runtime)
    return assemble(job, runtime, model, objective, Optimization.build(model, job.train, runtime.scaler), dataset)


# ------------------------------------------------------------------------------------------------ steps


def optimisation_step(run: Run, batch: dict[str, Any], use_bg: bool, dropout_p: float):
    """Forward (model + losses) under autocast, backward, clip, Adam; -> (losses, total, generated)."""
    seed = step_seed(run.job.seed, run.progress.step) + run.runtime.rank
    torch.manual_seed(seed)  # model-side randomness of this step (dropout, equivariance TPS)
    generator = torch.Generator().manual_seed(seed)  # CPU: draws are tiny
    with run.runtime.autocast():
        losses, generated = run.step_module(batch, use_bg, dropout_p, generator)
        total = sum(losses.values())
    run.optimization.backward_and_step(total, use_bg)
    return losses, total, generated


def loss_values(losses: dict[str, torch.Tensor], total: torch.Tensor, step: int) -> dict[str, float]:
    """Loss tensors -> floats (one device sync); a non-finite total is a clear error."""
    values = {k: float(v.detach()) for k, v in losses.items()}
    values["total"] = float(total.detach())
    if not np.isfinite(values["total"]):
        raise CpabanimError(f"training diverged at step {step}: loss {values}")
    return values


def run_epoch(run: Run, stop_after: int | None, steps_done: int, bar) -> int:
    """The rest of the current epoch (from the batch a resumed run stopped at); -> steps done by this call.

    Stops early at ``total_steps`` or after ``stop_after`` steps of this call; an epoch that ran to its end
    advances the per-epoch schedule.
    """
    p, tp = run.progress, run.job.train
    run.sampler.set_epoch(p.epoch, p.step - p.epoch * run.sampler.batches_per_epoch)
    use_bg, dropout_p = p.epoch >= tp.bg_start, dropout_probability(p.epoch, tp)
    clock = time.perf_counter()
    for batch in run.loader:
        if p.step >= run.total_steps or (stop_after is not None and steps_done >= stop_after):
            return steps_done
        batch = to_device(batch, run.runtime.device, tp.channels_last)
        fetched = time.perf_counter()
        losses, total, generated = optimisation_step(run, batch, use_bg, dropout_p)
        p.step += 1
        steps_done += 1
        now = time.perf_counter()
        run.timings["data_s"] += fetched - clock
        run.timings["step_s"] += now - clock
        run.timings["steps"] += 1
        run.last_losses = losses, total
        after_step(run, batch, generated, losses, total, dropout_p, bar)
        run.stopped_by = agreed_stop(run.stop, run.runtime)
        if run.stopped_by:
            return steps_done
        clock = time.perf_counter()  # logging and checkpoints count neither as data wait nor as step
    run.optimization.end_epoch()
    p.epoch += 1
    return steps_done


def after_step(run: Run, batch, generated, losses, total, dropout_p: float, bar) -> None:
    """Log every ``log_every`` steps (losses, lr, dropout, data-wait share), an image grid every ``image_every``,
    a checkpoint every ``checkpoint_every``. Losses are read (a device sync) only when logged or saved."""
    from cpabanim import tracking

    p, tp, is_main = run.progress, run.job.train, run.runtime.is_main
    bar.update(1)
    if p.step % tp.log_every == 0 or p.step == run.total_steps:
        values = loss_values(losses, total, p.step)
        bar.set_postfix(loss=f"{values['total']:.4f}")
        if is_main:
            tracking.log_metrics(step_metrics(run, values, dropout_p), step=p.step)
    if is_main and tp.image_every and p.step % tp.image_every == 0:
        from cpabanim.training.images import image_grid

        tracking.log_image(image_grid(batch, generated), f"grids/step_{p.step:06d}.png")
    if is_main and tp.checkpoint_every and p.step % tp.checkpoint_every == 0:
        loss_values(losses, total, p.step)  # never save a diverged model
        write_checkpoint(
            run.job.checkpoint,
            run.model,
            run.optimization,
            p,
            run.job.recorded,
            complete=False,
            world=run.runtime.world,
        )


def step_metrics(run: Run, values: dict[str, float], dropout_p: float) -> dict[str, float]:
    """What is logged: loss/*, lr, dropout_p, and since the last log the mean step time (data wait + compute) and
    the share of it spent waiting for data (docs/model.md, "Training step profile")."""
    metrics = {f"loss/{k}": v for k, v in values.items()}
    metrics.update(lr=run.optimization.lr, dropout_p=dropout_p)
    t = run.timings
    if t["steps"]:
        metrics["time/step_s"] = t["step_s"] / t["steps"]
        metrics["time/data_wait_share"] = t["data_s"] / max(t["step_s"], 1e-12)
    run.timings.update(data_s=0.0, step_s=0.0, steps=0)
    return metrics


# ------------------------------------------------------------------------------------------------ train


def train(
    job: TrainingJob,
    dataset=None,
    restart: bool = False,
    stop_after: int | None = None,
    runtime: Runtime | None = None,
    stop: StopRequest | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``job``; returns {"step", "epoch", "losses": last step's losses, "checkpoint", "complete",
    "interrupted": the name of the signal it stopped on, or None}.

    ``runtime``: the process's device, ranks and precision (:meth:`Runtime.start`); None opens one for this
    call from ``job.device`` and ``train.amp``. ``dataset`` overrides the FramesDataset (tests): any map-style
    dataset of FramesDataset-like items, with a ``sample(index, generator)`` method when its items are random.
    ``stop_after`` ends this call after that many steps without marking the checkpoint complete (simulates an
    interruption). ``stop``: the process's :func:`~cpabanim.training.preemption.stop_on_signals` request.
    """
    with contextlib.ExitStack() as stack:
        if runtime is None:
            runtime = stack.enter_context(Runtime.start(job.device, job.train.amp))
        run = build(job, runtime, dataset)
        run.stop = stop
        with checkpoint_folder_lock(job.checkpoint.parent, runtime.is_main):
            try:
                return _train(run, restart, stop_after)
            finally:
                runtime.barrier()


def _train(run: Run, restart: bool, stop_after: int | None) -> dict[str, Any]:
    """Resume or restart, the epochs, the final checkpoint."""
    tp, path, runtime = run.job.train, run.job.checkpoint, run.runtime
    p = run.progress = resume_or_restart(
        path, run.job.recorded, run.model, run.optimization, runtime.device, restart, runtime.is_main, runtime.world
    )
    if p.complete and (p.step >= run.total_steps or p.epoch >= tp.num_epochs):
        log.info("%s is complete (step %d); nothing to do (use --restart to train again)", path, p.step)
        return outcome(p, path, complete=True)
    if p.step:
        log.info("resuming from %s at step %d (epoch %d) of %d", path, p.step, p.epoch, run.total_steps)
    run.model.train()
    steps_done = 0
    run.stopped_by = agreed_stop(run.stop, runtime)  # a signal during the set-up: stop before the first step
    with progress_bar(
        total=run.total_steps, initial=p.step, desc="train", disable=not runtime.is_main, unit="step"
    ) as bar:
        while p.step < run.total_steps and p.epoch < tp.num_epochs and not run.stopped_by:
            if stop_after is not None and steps_done >= stop_after:
                break
            steps_done = run_epoch(run, stop_after, steps_done, bar)
    losses = loss_values(*run.last_losses, p.step) if run.last_losses else {}
    complete = p.step >= run.total_steps or p.epoch >= tp.num_epochs
    if runtime.is_main:
        write_checkpoint(path, run.model, run.optimization, p, run.job.recorded, complete=complete, world=runtime.world)
        # the trained model is logged once, as an MLflow model, by the report (cpabanim/reporting/mlflow_model.py)
    stopped = run.stopped_by and report_interrupted(path.parent, run.stopped_by, p.step, p.epoch, runtime.is_main)
    return outcome(p, path, complete, losses, interrupted=stopped or None)


def outcome(
    p: Progress, path: Path, complete: bool, losses: dict | None = None, interrupted: str | None = None
) -> dict:
    """What :func:`train` returns (see there)."""
    result = {"step": p.step, "epoch": p.epoch, "losses": losses or {}, "checkpoint": path, "complete": complete}
    return {**result, "interrupted": interrupted}
