"""TPSMM's AVD training (docs/model.md, "AVD stage"; docs/faithfulness.md): after the animation model is trained,
only the AVD network learns, on keypoints of the trained detector. The avd stage runs it in its own folder
(cpabanim/training/avd_stage.py); this module is the optimisation itself.

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

Determinism: the batches come through the training DataLoader (:func:`cpabanim.data.loader.make_loader`, any
number of workers) from :class:`AVDBatchSampler`; each item is drawn from its own generator, seeded from (seed,
epoch, its position in the epoch), and each batch's pose scaling from (seed, epoch, batch). A batch therefore
depends on (seed, epoch, batch) alone, so neither the worker count nor a resume in the middle of an epoch
(:class:`AVDTraining`, which skips the epoch's finished batches) changes the trained network.

    schedule = AVDSchedule.of(job.train)
    result = fit_avd(model, dataset, schedule, device, seed=job.seed, workers=2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler

from cpabanim.data.loader import ItemKey, item_seed, make_loader, step_seed, to_device

# the schedule lives apart (the train stage reads it without this module's code); it is used, and named, here too
from cpabanim.training.avd_schedule import AVDSchedule, check_avd_batch
from cpabanim.training.preemption import ignore_stop_signals

# Seeds of AVD epochs and steps are offset from the main trainer's so that the two stages draw different items.
AVD_SEED_OFFSET = 5_000_000


def random_scale(kp: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """Scale keypoints (B, K, 2) per sample and per axis by U[1 - scale, 1 + scale] -> (B, K, 2)."""
    factors = torch.rand(kp.shape[0], 1, 2, generator=generator) * (2 * scale) + (1 - scale)
    return kp * factors.to(kp)


def epoch_batches(num_videos: int, schedule: AVDSchedule, seed: int, epoch: int) -> list[list[int]]:
    """Video indices of each full batch of one AVD epoch: ``repeats`` passes over ``num_videos`` videos,
    shuffled by a generator seeded from (seed, epoch), incomplete last batch dropped (TPSMM's drop_last)."""
    items = num_videos * schedule.repeats
    generator = torch.Generator().manual_seed(step_seed(seed, AVD_SEED_OFFSET + epoch))
    order = (torch.randperm(items, generator=generator) % num_videos).tolist()
    count = items // schedule.batch_size
    return [order[i * schedule.batch_size : (i + 1) * schedule.batch_size] for i in range(count)]


def pose_seed(seed: int, epoch: int, number: int) -> int:
    """Seed of batch ``number``'s pose scaling in ``epoch`` (item seeds use indices >= 0, this uses < 0)."""
    return item_seed(seed, AVD_SEED_OFFSET + epoch, -1 - number)


def avd_scheduler(optimizer: torch.optim.Optimizer, schedule: AVDSchedule) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR x0.1 reproducing TPSMM's end-of-epoch ``step(epoch)``: epoch e runs at lr x 0.1^#{m < e}."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, [m + 1 for m in schedule.milestones], gamma=0.1)


def batch_keys(indices: list[int], seed: int, epoch: int, first: int) -> list[ItemKey]:
    """The keys of one AVD batch whose first item is item ``first`` of ``epoch``: each item drawn from its own
    generator, seeded from (seed, epoch, its position in the epoch)."""
    return [ItemKey(index, item_seed(seed, AVD_SEED_OFFSET + epoch, first + i)) for i, index in enumerate(indices)]


class AVDBatchSampler(Sampler[list[ItemKey]]):
    """The batches of :class:`ItemKey` of one AVD epoch (:func:`epoch_batches`), from batch ``start`` on (a resumed
    epoch): what the training DataLoader (:func:`cpabanim.data.loader.make_loader`) serves, in any number of
    workers. Call :meth:`set_epoch` before each ``iter(loader)``; the sampler lives in the main process."""

    def __init__(self, num_videos: int, schedule: AVDSchedule, seed: int):
        self.num_videos, self.schedule, self.seed = num_videos, schedule, seed
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_videos * self.schedule.repeats // self.schedule.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next iteration yield ``epoch``'s batches ``start``, ``start + 1``, ..."""
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)

    def __iter__(self) -> Iterator[list[ItemKey]]:
        size = self.schedule.batch_size
        batches = epoch_batches(self.num_videos, self.schedule, self.seed, self.epoch)
        for number in range(self.start, len(batches)):
            yield batch_keys(batches[number], self.seed, self.epoch, number * size)


@dataclass
class AVDProgress:
    """Where an AVD training stands: the epoch in progress (``epochs`` once done), the batches of it done, and
    the optimiser steps done in all."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


class AVDTraining:
    """TPSMM's AVD optimisation of ``model`` (module docstring), resumable: Adam on ``model.avd`` and the
    MultiStepLR of ``schedule``, where it stands (:attr:`progress`) and the last step's loss. A resumed training
    loads the whole model state (the keypoint detector's BatchNorm statistics move too), :meth:`load` the rest:
    it then goes on exactly as the uninterrupted one (the batches depend on (seed, epoch, batch) alone)."""

    def __init__(self, model: nn.Module, schedule: AVDSchedule, seed: int):
        self.model, self.schedule, self.seed = model, schedule, seed
        self.optimizer = torch.optim.Adam(model.avd.parameters(), lr=schedule.lr, betas=schedule.betas)
        self.scheduler = avd_scheduler(self.optimizer, schedule)
        self.progress = AVDProgress()
        self.loss = torch.zeros(())  # of the last step
        self.step_lr = schedule.lr  # the learning rate of the last step

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def done(self) -> bool:
        return self.progress.epoch >= self.schedule.epochs

    def state(self) -> dict[str, Any]:
        """The optimiser, scheduler and progress (the model's state is saved with the model)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": asdict(self.progress),
        }

    def load(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state` (after the model's state was loaded)."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = AVDProgress(**{k: int(v) for k, v in state["progress"].items()})

    def step(self, batch: dict[str, Any]) -> None:
        """One optimiser step on ``batch`` (source, driving: (B, 3, H, W) on the model's device): the pose input
        is the driving keypoints scaled by this batch's own generator; then the progress moves on."""
        model, p = self.model, self.progress
        generator = torch.Generator().manual_seed(pose_seed(self.seed, p.epoch, p.batch))
        with torch.no_grad():
            kp_source = model.kp_detector(batch["source"])
            kp_driving = model.kp_detector(batch["driving"])
        prediction = model.avd(kp_source, random_scale(kp_driving, self.schedule.random_scale, generator))
        self.loss = (kp_driving - prediction).abs().mean()
        self.step_lr = self.lr
        self.optimizer.zero_grad(set_to_none=True)
        self.loss.backward()
        self.optimizer.step()
        p.step += 1
        p.batch += 1

    def end_epoch(self) -> None:
        """TPSMM's end-of-epoch scheduler step; the next epoch starts at its first batch."""
        self.scheduler.step()
        self.progress.epoch += 1
        self.progress.batch = 0

    def fit(
        self,
        dataset,
        device: torch.device,
        *,
        workers: int = 0,
        prefetch_factor: int = 2,
        max_steps: int = 0,
        detector_train_mode: bool = True,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        after_step: Callable[[AVDTraining], bool] | None = None,
    ) -> bool:
        """Train from where :attr:`progress` stands to the end of the schedule (or ``max_steps`` steps in all);
        -> True when ``after_step`` (called after every step, the epoch's end included) asked to stop. Arguments as
        :func:`fit_avd`'s. The model is left in eval mode."""
        check_avd_batch(len(dataset), self.schedule)
        sampler = AVDBatchSampler(len(dataset), self.schedule, self.seed)
        loader = make_loader(dataset, sampler, workers, device, prefetch_factor)
        loader.worker_init_fn = ignore_stop_signals  # the stage's process stops its workers itself (preemption.py)
        p = self.progress
        self.model.kp_detector.train(detector_train_mode)
        self.model.avd.train()
        try:
            while not self.done and not (max_steps and p.step >= max_steps):
                sampler.set_epoch(p.epoch, p.batch)
                for batch in loader:
                    if max_steps and p.step >= max_steps:
                        return False
                    self.step(to_device(batch, device))
                    if on_step is not None:
                        on_step(p.step, {"loss/avd": float(self.loss.detach()), "lr": self.step_lr})
                    if p.batch == sampler.batches_per_epoch:
                        self.end_epoch()
                    if after_step is not None and after_step(self):
                        return True
        finally:
            self.model.avd.eval()
            self.model.kp_detector.eval()
        return False


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
    workers: int = 0,
    prefetch_factor: int = 2,
) -> dict[str, Any]:
    """Train ``model.avd`` on keypoints of ``model.kp_detector`` with TPSMM's schedule (module docstring), from
    the start (:class:`AVDTraining` resumes).

    Args:
        model: an AnimationModel (its ``kp_detector`` and ``avd`` are used), already on ``device``.
        dataset: the training videos, ONE pass (build it with ``num_repeats = 1``): items with ``source`` and
            ``driving`` (3, H, W) frames; ``schedule.repeats`` passes make an epoch.
        schedule: :class:`AVDSchedule`.
        seed: seeds the epoch order, the items' frame sampling and the pose scaling.
        max_steps: stop after this many optimiser steps (0: the whole schedule).
        detector_train_mode: True as TPSMM (BatchNorm batch statistics, running statistics updated);
            False keeps the detector in eval mode (its running statistics stay those of the trained model).
        on_step: called with (step, {"loss/avd": ..., "lr": ...}) after every step (logging).
        workers: DataLoader worker processes building the batches (0: this process); the batches do not depend
            on it. prefetch_factor: batches each worker prepares ahead.
    Returns:
        dict: steps, epochs (completed), loss (last), lr (last), optimizer / scheduler state dicts.
    Raises:
        ConfigError: when an epoch holds no full batch.
    """
    training = AVDTraining(model, schedule, seed)
    training.fit(
        dataset,
        device,
        workers=workers,
        prefetch_factor=prefetch_factor,
        max_steps=max_steps,
        detector_train_mode=detector_train_mode,
        on_step=on_step,
    )
    return {
        "steps": training.progress.step,
        "epochs": training.progress.epoch,
        "loss": float(training.loss.detach()),
        "lr": training.lr,
        "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
    }
