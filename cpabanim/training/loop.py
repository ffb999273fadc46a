"""The training loop (docs/model.md, "Trainer"): build, resume or restart, epochs, checkpoint, log.

``train(params)`` runs or resumes training with the paper's schedule (docs/model.md, "Trainer").
It opens no MLflow run: the CLI runs every stage inside one, and ``cpabanim.tracking.log_*`` do nothing when
none is open.

Determinism: batches come from ``cpabanim.data.loader`` (a (seed, epoch) permutation, each item drawn from its
own generator seeded by (seed, epoch, index)), and every step re-seeds the model-side randomness (transform
dropout, equivariance TPS) from (seed, step). Any worker count, process count and a resume therefore give the
same parameters as one uninterrupted run (bit-exact on CPU).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cpabanim.config.paths import CHECKPOINT_NAME
from cpabanim.data.loader import EpochBatchSampler, make_loader, resolve_num_workers, step_seed, to_device
from cpabanim.runtime import resolve_device
from cpabanim.errors import ConfigError, CpabanimError, DataError
from cpabanim.training.schedule import dropout_probability, total_steps
from cpabanim.training.state import Progress, resume_or_restart, write_checkpoint
from cpabanim.training.step import Optimization, TrainingStep, autocast

log = logging.getLogger(__name__)

COMPILED_NETWORKS = ("kp_detector", "bg_predictor", "dense_motion", "generator")


@dataclass
class Ranks:
    """This process's place in a (torchrun) DDP job: rank, world size, local rank, device."""

    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def local_world(self) -> int:
        return int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))


@dataclass
class Run:
    """Everything one training call needs, built once by :func:`build`."""

    params: dict[str, Any]
    tp: dict[str, Any]
    ranks: Ranks
    model: nn.Module
    step_module: nn.Module
    optimization: Optimization
    autocast: contextlib.AbstractContextManager
    sampler: EpochBatchSampler
    loader: torch.utils.data.DataLoader
    checkpoint_path: Path
    total_steps: int
    progress: Progress = field(default_factory=Progress)
    last_losses: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None  # of the last step, not yet read
    timings: dict[str, float] = field(default_factory=lambda: {"data_s": 0.0, "step_s": 0.0, "steps": 0})


# ------------------------------------------------------------------------------------------------ build


def build_dataset(params: dict[str, Any], needs_masks: bool):
    """The configured FramesDataset over ``{paths.processed}`` (with ``{paths.masks}`` when the semantic loss is
    on); an epoch is the train set repeated ``data.num_repeats`` times (the paper's num_repeats)."""
    from cpabanim.data.dataset import dataset_from_params

    root = Path(params["paths"]["processed"])
    if not (root / "train").is_dir():
        raise DataError(f"no training frames in {root / 'train'}: run `cpabanim preprocess` first")
    if needs_masks and not Path(params["paths"]["masks"]).is_dir():
        raise DataError(f"loss.semantic=masks needs region masks in {params['paths']['masks']}: run `cpabanim masks` "
                        "first (or --set loss.semantic=off)")
    return dataset_from_params(params, "train", with_masks=needs_masks)


def init_ranks(params: dict[str, Any]) -> Ranks:
    """Read torchrun's environment, pick the device, join the process group (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ranks = Ranks(int(os.environ.get("RANK", "0")), world, local_rank, resolve_device(params["device"], local_rank))
    if ranks.device.type == "cuda":
        torch.cuda.set_device(ranks.device)
        torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick its fastest kernels
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if ranks.device.type == "cuda" else "gloo")
    return ranks


def build_model(params: dict[str, Any], tp: dict[str, Any], device: torch.device):
    """(AnimationModel, GeneratorObjective) on ``device``, with the optional channels_last layout and compile."""
    from cpabanim.losses.objective import GeneratorObjective
    from cpabanim.models.full import AnimationModel

    try:
        model = AnimationModel(params["model"]).to(device)
    except ValueError as exc:  # inconsistent sizes (e.g. scale_factor vs hourglass depth)
        raise ConfigError(f"model: {exc}") from exc
    if tp["init_from"]:
        warm_start_from(model, Path(tp["init_from"]))
    objective = GeneratorObjective(params["loss"], params["paths"]["weights"]).to(device)
    if tp["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if tp["compile"]:
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
    log.info("warm start from %s: %d tensors loaded, %d sliced, %d fresh, %d unused", path, counts["loaded"],
             counts["sliced"], counts["fresh"], counts["unused"])
    tracking.log_metrics({f"init_from/{kind}": count for kind, count in counts.items()})


def build(params: dict[str, Any], dataset=None) -> Run:
    """Seed, model, objective, optimisers, DDP wrapper, dataset, sampler and DataLoader of one training call."""
    tp = params["train"]
    ranks = init_ranks(params)
    seed = int(params["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    model, objective = build_model(params, tp, ranks.device)
    if dataset is None:
        dataset = build_dataset(params, objective.needs_masks)
    if len(dataset) < tp["batch_size"] * ranks.world:
        raise DataError(f"the training set has {len(dataset)} items, fewer than batch_size x processes "
                        f"({tp['batch_size']} x {ranks.world})")
    amp_context, scaler = autocast(ranks.device, "bf16" if tp["amp"] == "auto" else tp["amp"])
    optimization = Optimization.build(model, tp, scaler)
    step_module: nn.Module = TrainingStep(model, objective)
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        step_module = DistributedDataParallel(step_module, device_ids=[ranks.local_rank] if ranks.device.type == "cuda"
                                              else None, find_unused_parameters=True)
    sampler = EpochBatchSampler(len(dataset), tp["batch_size"], seed, ranks.rank, ranks.world)
    workers = resolve_num_workers(tp["num_workers"], ranks.local_world)
    loader = make_loader(dataset, sampler, workers, ranks.device, tp["prefetch_factor"])
    return Run(params, tp, ranks, model, step_module, optimization, amp_context, sampler, loader,
               Path(params["paths"]["checkpoints"]) / CHECKPOINT_NAME, total_steps(sampler.batches_per_epoch, tp))


# ------------------------------------------------------------------------------------------------ steps


def optimisation_step(run: Run, batch: dict[str, Any], use_bg: bool, dropout_p: float):
    """Forward (model + losses) under autocast, backward, clip, Adam; -> (losses, total, generated)."""
    seed = step_seed(int(run.params["seed"]), run.progress.step) + run.ranks.rank
    torch.manual_seed(seed)  # model-side randomness of this step (dropout, equivariance TPS)
    generator = torch.Generator().manual_seed(seed)  # CPU: draws are tiny
    with run.autocast:
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


def run_epoch(run: Run, stop_after: int | None, steps_done: int, progress_bar) -> int:
    """The rest of the current epoch (from the batch a resumed run stopped at); -> steps done by this call.

    Stops early at ``total_steps`` or after ``stop_after`` steps of this call; an epoch that ran to its end
    advances the per-epoch schedule.
    """
    p, tp = run.progress, run.tp
    run.sampler.set_epoch(p.epoch, p.step - p.epoch * run.sampler.batches_per_epoch)
    use_bg, dropout_p = p.epoch >= tp["bg_start"], dropout_probability(p.epoch, tp)
    clock = time.perf_counter()
    for batch in run.loader:
        if p.step >= run.total_steps or (stop_after is not None and steps_done >= stop_after):
            return steps_done
        batch = to_device(batch, run.ranks.device, tp["channels_last"])
        fetched = time.perf_counter()
        losses, total, generated = optimisation_step(run, batch, use_bg, dropout_p)
        p.step += 1
        steps_done += 1
        now = time.perf_counter()
        run.timings["data_s"] += fetched - clock
        run.timings["step_s"] += now - clock
        run.timings["steps"] += 1
        run.last_losses = losses, total
        after_step(run, batch, generated, losses, total, dropout_p, progress_bar)
        clock = time.perf_counter()  # logging and checkpoints count neither as data wait nor as step
    run.optimization.end_epoch()
    p.epoch += 1
    return steps_done


def after_step(run: Run, batch, generated, losses, total, dropout_p: float, progress_bar) -> None:
    """Log every ``log_every`` steps (losses, lr, dropout, data-wait share), an image grid every ``image_every``,
    a checkpoint every ``checkpoint_every``. Losses are read (a device sync) only when logged or saved."""
    from cpabanim import tracking

    p, tp = run.progress, run.tp
    progress_bar.update(1)
    if p.step % tp["log_every"] == 0 or p.step == run.total_steps:
        values = loss_values(losses, total, p.step)
        progress_bar.set_postfix(loss=f"{values['total']:.4f}")
        if run.ranks.is_main:
            tracking.log_metrics(step_metrics(run, values, dropout_p), step=p.step)
    if run.ranks.is_main and tp["image_every"] and p.step % tp["image_every"] == 0:
        from cpabanim.training.images import image_grid

        tracking.log_image(image_grid(batch, generated), f"grids/step_{p.step:06d}.png")
    if run.ranks.is_main and tp["checkpoint_every"] and p.step % tp["checkpoint_every"] == 0:
        loss_values(losses, total, p.step)  # never save a diverged model
        write_checkpoint(run.checkpoint_path, run.model, run.optimization, p, run.params, complete=False)


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


@contextlib.contextmanager
def checkpoint_folder_lock(folder: Path, is_main: bool):
    """Hold the checkpoint folder's exclusive lock for the whole run and clear stale temporary files under it
    (the main process only: the other ranks never write there)."""
    from cpabanim.models.checkpoint import hold_checkpoint_folder, remove_stale_temp_files

    if not is_main:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with hold_checkpoint_folder(folder):
        remove_stale_temp_files(folder)
        yield


def plain_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A plain nested dict of the params (the CLI may hand a frozen ``cpabanim.config.section.Section``)."""
    to_dict = getattr(params, "to_dict", None)
    return to_dict() if to_dict is not None else {k: plain_params(v) if isinstance(v, Mapping) else v
                                                  for k, v in params.items()}


def train(params: Mapping[str, Any], dataset=None, restart: bool = False,
          stop_after: int | None = None) -> dict[str, Any]:
    """Run (or resume) training; returns {"step", "epoch", "losses": last step's losses, "checkpoint", "complete"}.

    ``dataset`` overrides the FramesDataset (tests): any map-style dataset of FramesDataset-like items, with a
    ``sample(index, generator)`` method when its items are random. ``stop_after`` ends this call after that many
    steps without marking the checkpoint complete (simulates an interruption).
    """
    run = build(plain_params(params), dataset)
    with checkpoint_folder_lock(run.checkpoint_path.parent, run.ranks.is_main):
        try:
            return _train(run, restart, stop_after)
        finally:
            if run.ranks.world > 1:
                import torch.distributed as dist

                dist.barrier()


def _train(run: Run, restart: bool, stop_after: int | None) -> dict[str, Any]:
    """Resume or restart, the epochs, the final checkpoint."""
    from tqdm import tqdm


    tp, path = run.tp, run.checkpoint_path
    p = run.progress = resume_or_restart(path, run.params, run.model, run.optimization, run.ranks.device, restart,
                                         run.ranks.is_main)
    if p.complete and (p.step >= run.total_steps or p.epoch >= tp["num_epochs"]):
        log.info("%s is complete (step %d); nothing to do (use --restart to train again)", path, p.step)
        return {"step": p.step, "epoch": p.epoch, "losses": {}, "checkpoint": path, "complete": True}
    if p.step:
        log.info("resuming from %s at step %d (epoch %d) of %d", path, p.step, p.epoch, run.total_steps)
    run.model.train()
    steps_done = 0
    with tqdm(total=run.total_steps, initial=p.step, desc="train", disable=not run.ranks.is_main, unit="step") as bar:
        while p.step < run.total_steps and p.epoch < tp["num_epochs"]:
            if stop_after is not None and steps_done >= stop_after:
                break
            steps_done = run_epoch(run, stop_after, steps_done, bar)
    losses = loss_values(*run.last_losses, p.step) if run.last_losses else {}
    complete = p.step >= run.total_steps or p.epoch >= tp["num_epochs"]
    if run.ranks.is_main:
        write_checkpoint(path, run.model, run.optimization, p, run.params, complete=complete)
        # the trained model is logged once, as an MLflow model, by the report (cpabanim/reporting/mlflow_model.py)
    return {"step": p.step, "epoch": p.epoch, "losses": losses, "checkpoint": path, "complete": complete}
