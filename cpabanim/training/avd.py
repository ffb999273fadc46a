"""TPSMM's AVD training stage (docs/model.md; docs/faithfulness.md): after the animation model is trained,
only the AVD network learns, on keypoints of the trained detector.

TPSMM's schedule, reproduced:

- an epoch is ``repeats`` passes over the training videos in a random order, cut into full batches of
  ``batch_size`` (the rest of the epoch is dropped); ``epochs`` epochs;
- Adam(lr, betas 0.5/0.999) on the AVD network only, learning rate x0.1 at each of ``milestones``. TPSMM steps
  its MultiStepLR with the epoch index at the END of each epoch, so a drop takes effect one epoch after its
  milestone (epoch e runs at lr x 0.1^#{m < e}); a MultiStepLR on milestones + 1 stepped once per epoch gives
  exactly that;
- the keypoint detector runs without gradients but in TRAIN mode, as TPSMM's train_avd never switches it to
  eval: its BatchNorm layers normalise with the batch's statistics and update their running statistics;
- the pose input is the driving keypoints scaled per sample and per axis by U[1 - s, 1 + s] (s =
  ``random_scale``), the identity input is the source keypoints, and the loss is mean |kp_D - AVD(kp_S, scaled
  kp_D)| (TPSMM's ``lambda_shift`` is 1 in every config and only scales the loss, so it is left out).

    schedule = AVDSchedule.of(job.train)
    result = fit_avd(model, dataset, schedule, device, seed=job.seed)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from cpabanim.config.typed import TrainConfig
from cpabanim.errors import ConfigError, CpabanimError
from cpabanim.training.job import TrainingJob

log = logging.getLogger(__name__)

# Seeds of AVD epochs and steps are offset from the main trainer's so that the two stages draw different items.
AVD_SEED_OFFSET = 5_000_000


@dataclass(frozen=True)
class AVDSchedule:
    """TPSMM's ``train_avd_params`` (vox: 200 epochs x 300 repeats, milestones [140, 180], lr 1e-3, batch 256)."""

    epochs: int
    repeats: int
    milestones: tuple[int, ...]
    lr: float
    batch_size: int
    random_scale: float
    betas: tuple[float, float]

    @classmethod
    def of(cls, train: TrainConfig) -> AVDSchedule:
        """From the ``train`` section (cpabanim/schemas/train.yaml: avd_* keys and betas)."""
        return cls(
            int(train.avd_epochs),
            int(train.avd_repeats),
            tuple(int(m) for m in train.avd_milestones),
            float(train.avd_lr),
            int(train.avd_batch_size),
            float(train.avd_random_scale),
            (float(train.betas[0]), float(train.betas[1])),
        )


def random_scale(kp: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Scale keypoints (B, K, 2) per sample and per axis by U[1 - scale, 1 + scale] -> (B, K, 2)."""
    factors = torch.rand(kp.shape[0], 1, 2, generator=generator) * (2 * scale) + (1 - scale)
    return kp * factors.to(kp)


def epoch_batches(num_videos: int, schedule: AVDSchedule, seed: int, epoch: int) -> list[list[int]]:
    """Video indices of each full batch of one AVD epoch: ``repeats`` passes over ``num_videos`` videos,
    shuffled by a generator seeded from (seed, epoch), incomplete last batch dropped (TPSMM's drop_last)."""
    from cpabanim.data.loader import step_seed

    items = num_videos * schedule.repeats
    generator = torch.Generator().manual_seed(step_seed(seed, AVD_SEED_OFFSET + epoch))
    order = (torch.randperm(items, generator=generator) % num_videos).tolist()
    count = items // schedule.batch_size
    return [order[i * schedule.batch_size : (i + 1) * schedule.batch_size] for i in range(count)]


def pose_seed(seed: int, epoch: int, number: int) -> int:
    """Seed of batch ``number``'s pose scaling in ``epoch`` (item seeds use indices >= 0, this uses < 0)."""
    from cpabanim.data.loader import item_seed

    return item_seed(seed, AVD_SEED_OFFSET + epoch, -1 - number)


def avd_scheduler(optimizer: torch.optim.Optimizer, schedule: AVDSchedule) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR x0.1 reproducing TPSMM's end-of-epoch ``step(epoch)``: epoch e runs at lr x 0.1^#{m < e}."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [m + 1 for m in schedule.milestones], gamma=0.1)


def _batch(dataset, indices: list[int], seed: int, epoch: int, first: int, device: torch.device) -> dict[str, Any]:
    """Load the items of one batch, each from its own generator (cpabanim.data.loader), onto ``device``."""
    from cpabanim.data.loader import ItemKey, collate, item_seed, load_item, to_device

    keys = [ItemKey(index, item_seed(seed, AVD_SEED_OFFSET + epoch, first + i)) for i, index in enumerate(indices)]
    return to_device(collate([load_item(dataset, key) for key in keys]), device)


def check_avd_batch(num_videos: int, schedule: AVDSchedule) -> None:
    """Refuse a schedule whose epoch holds no full batch (``train.avd_batch_size`` above the training videos x
    ``train.avd_repeats``, or below 2: BatchNorm). The train stage calls it before training, so that the mistake
    is not found only after the whole training ran; :func:`fit_avd` again, for library use."""
    fix = "lower train.avd_batch_size, raise train.avd_repeats, or skip the AVD stage with train.avd_epochs=0"
    if schedule.batch_size < 2:
        raise ConfigError(f"train.avd_batch_size {schedule.batch_size} cannot make a batch: BatchNorm needs 2 or more")
    if num_videos * schedule.repeats < schedule.batch_size:
        raise ConfigError(
            f"train.avd_batch_size {schedule.batch_size} is larger than the {num_videos} training videos x "
            f"train.avd_repeats {schedule.repeats} of an AVD epoch, which cannot make a batch: {fix}"
        )


def fit_avd(
    model: nn.Module,
    dataset,
    schedule: AVDSchedule,
    device: torch.device,
    *,
    seed: int,
    max_steps: int = 0,
    detector_train_mode: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train ``model.avd`` on keypoints of ``model.kp_detector`` with TPSMM's schedule (module docstring).

    Args:
        model: an AnimationModel (its ``kp_detector`` and ``avd`` are used), already on ``device``.
        dataset: the training videos, ONE pass (build it with ``data.num_repeats = 1``): items with ``source``
            and ``driving`` (3, H, W) frames; ``schedule.repeats`` passes make an epoch.
        schedule: :class:`AVDSchedule`.
        seed: seeds the epoch order, the items' frame sampling and the pose scaling.
        max_steps: stop after this many optimiser steps (0: the whole schedule).
        detector_train_mode: True as TPSMM (BatchNorm batch statistics, running statistics updated);
            False keeps the detector in eval mode (its running statistics stay those of the trained model).
        on_step: called with (step, {"loss/avd": ..., "lr": ...}) after every step (logging).
    Returns:
        dict: steps, epochs (completed), loss (last), lr (last), optimizer / scheduler state dicts.
    Raises:
        ConfigError: when an epoch holds no full batch.
    """
    num_videos = len(dataset)
    check_avd_batch(num_videos, schedule)
    optimizer = torch.optim.Adam(model.avd.parameters(), lr=schedule.lr, betas=schedule.betas)
    scheduler = avd_scheduler(optimizer, schedule)
    model.kp_detector.train(detector_train_mode)
    model.avd.train()
    step, epochs_done, loss = 0, 0, torch.zeros(())
    try:
        for epoch in range(schedule.epochs):
            for number, indices in enumerate(epoch_batches(num_videos, schedule, seed, epoch)):
                if max_steps and step >= max_steps:
                    break
                batch = _batch(dataset, indices, seed, epoch, number * schedule.batch_size, device)
                generator = torch.Generator().manual_seed(pose_seed(seed, epoch, number))
                with torch.no_grad():
                    kp_source = model.kp_detector(batch["source"])
                    kp_driving = model.kp_detector(batch["driving"])
                prediction = model.avd(kp_source, random_scale(kp_driving, schedule.random_scale, generator))
                loss = (kp_driving - prediction).abs().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if on_step is not None:
                    on_step(step, {"loss/avd": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"]})
            else:
                epochs_done += 1
                scheduler.step()
                continue
            break  # max_steps reached inside the epoch
    finally:
        model.avd.eval()
        model.kp_detector.eval()
    return {
        "steps": step,
        "epochs": epochs_done,
        "loss": float(loss.detach()),
        "lr": optimizer.param_groups[0]["lr"],
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }


def train_avd(job: TrainingJob, device: torch.device | None = None, dataset=None) -> dict[str, Any]:
    """After training, TPSMM's AVD stage (:func:`fit_avd`) on the complete checkpoint ``job.checkpoint``,
    written back with the schedule it ran (``avd_schedule``); skipped when that schedule already ran.
    ``train.avd_epochs: 0`` skips it. ``device``: the runtime's (None: ``job.device``, this process alone).
    """
    from cpabanim.training.state import checkpoint_folder_lock

    with checkpoint_folder_lock(job.checkpoint.parent, is_main=True):  # one AVD trainer per folder too
        return _train_avd(job, device, dataset)


def _train_avd(job: TrainingJob, device: torch.device | None, dataset) -> dict[str, Any]:
    """:func:`train_avd` under the checkpoint folder's lock."""
    from dataclasses import asdict

    from cpabanim import tracking
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.checkpoint import load_model_state, read_checkpoint, save_checkpoint
    from cpabanim.models.full import AnimationModel
    from cpabanim.runtime import resolve_device
    from cpabanim.training.loop import build_dataset

    path = job.checkpoint
    state = read_checkpoint(path)
    if not state.get("complete"):
        raise CpabanimError(f"{path} is not complete: finish `cpabanim train` before training the AVD network")
    schedule = AVDSchedule.of(job.train)
    if state.get("avd_schedule") == _plain(asdict(schedule)):
        log.info("AVD network already trained with this schedule (%s)", path)
        return {"steps": 0, "loss": None}
    device = resolve_device(job.device, 0) if device is None else device
    model = AnimationModel(ModelConfig.from_mapping(state["model_params"])).to(device)
    load_model_state(model, state["model"], path)
    if dataset is None:  # the AVD stage makes its own repeats: one pass over the training videos
        dataset = build_dataset(job, needs_masks=False, num_repeats=1)
    log_every = job.train.log_every

    def on_step(step: int, values: dict[str, float]) -> None:
        if step % log_every == 0:
            tracking.log_metrics(values, step=step)

    result = fit_avd(model, dataset, schedule, device, seed=job.seed, on_step=on_step)
    save_checkpoint(
        path,
        model,
        state["optimizers"],
        state["schedulers"],
        state["step"],
        state["epoch"],
        state["params"],
        state["rng_state"],
        complete=True,
        extra={
            "avd_schedule": _plain(asdict(schedule)),
            "avd_trained": True,
            "avd_steps": result["steps"],
            "world": int(state.get("world", 1)),  # of the main training (cpabanim/training/state.py)
        },
    )
    log.info(
        "AVD network trained: %d steps, %d epochs, last loss %.4g", result["steps"], result["epochs"], result["loss"]
    )
    return result


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
