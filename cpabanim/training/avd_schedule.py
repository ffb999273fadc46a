"""TPSMM's AVD schedule (the ``train.avd_*`` keys and ``betas``) and the check that it can make a batch: what the
train stage reads before training (to refuse a schedule the training videos cannot fill), kept apart from the AVD
optimisation (:mod:`cpabanim.training.avd`) so that editing that code re-runs the avd stage only, never training."""

from __future__ import annotations

from dataclasses import dataclass

from cpabanim.config.typed import TrainConfig
from cpabanim.errors import ConfigError


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


def check_avd_batch(num_videos: int, schedule: AVDSchedule) -> None:
    """Refuse a schedule whose epoch holds no full batch (``train.avd_batch_size`` above the training videos x
    ``train.avd_repeats``, or below 2: BatchNorm). The train stage calls it before training, so that the mistake
    is not found only after the whole training ran; :meth:`AVDTraining.fit` again."""
    fix = "lower train.avd_batch_size, raise train.avd_repeats, or train no AVD network with train.avd_epochs=0"
    if schedule.batch_size < 2:
        raise ConfigError(f"train.avd_batch_size {schedule.batch_size} cannot make a batch: BatchNorm needs 2 or more")
    if num_videos * schedule.repeats < schedule.batch_size:
        raise ConfigError(
            f"train.avd_batch_size {schedule.batch_size} is larger than the {num_videos} training videos x "
            f"train.avd_repeats {schedule.repeats} of an AVD epoch, which cannot make a batch: {fix}"
        )
