"""TPSMM's AVD training schedule (cpabanim/training/avd.py): epochs x repeats, MultiStepLR as TPSMM steps it,
keypoint detector in train mode, only the AVD network learns."""

from __future__ import annotations

import copy

import pytest
import torch

from cpabanim.config.typed import ModelConfig, TrainConfig
from cpabanim.errors import ConfigError
from cpabanim.models.full import AnimationModel
from cpabanim.training.avd import AVDSchedule, avd_scheduler, epoch_batches, fit_avd

TINY = {
    "num_cpab": 2,
    "backbone": "small",
    "motion": "tps",
    "generator": {"block_expansion": 8, "max_features": 32, "num_down_blocks": 3},
    "dense_motion": {"block_expansion": 8, "max_features": 32, "num_blocks": 3, "scale_factor": 0.5},
    "avd": {"id_bottle_size": 8, "pose_bottle_size": 8},
}


class Clips:
    """A fixed set of (source, driving) pairs, without randomness (served by index)."""

    def __init__(self, n: int, size: int = 32):
        gen = torch.Generator().manual_seed(0)
        self.items = [
            {"source": torch.rand(3, size, size, generator=gen), "driving": torch.rand(3, size, size, generator=gen)}
            for _ in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.items[index]


def _schedule(**overrides) -> AVDSchedule:
    values = {
        "epochs": 4,
        "repeats": 3,
        "milestones": (1, 2),
        "lr": 1e-3,
        "batch_size": 4,
        "random_scale": 0.25,
        "betas": (0.5, 0.999),
    }
    return AVDSchedule(**{**values, **overrides})


def test_schedule_from_the_train_section():
    tp = {
        "avd_epochs": 200,
        "avd_repeats": 300,
        "avd_milestones": [140, 180],
        "avd_lr": 1e-3,
        "avd_batch_size": 256,
        "avd_random_scale": 0.25,
        "betas": [0.5, 0.999],
    }
    assert AVDSchedule.of(TrainConfig.from_mapping(tp)) == AVDSchedule(
        200, 300, (140, 180), 1e-3, 256, 0.25, (0.5, 0.999)
    )


def test_learning_rate_drops_one_epoch_after_each_milestone_as_tpsmm():
    """TPSMM calls scheduler.step(epoch) at the end of epoch `epoch`: epoch e runs at lr * 0.1^#{m < e}."""
    schedule = _schedule(epochs=200, milestones=(140, 180))
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=schedule.lr)
    scheduler = avd_scheduler(optimizer, schedule)
    for epoch in range(200):
        expected = 1e-3 * 0.1 ** sum(m < epoch for m in schedule.milestones)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9), epoch
        optimizer.step()
        scheduler.step()


def test_epoch_is_repeats_passes_over_the_videos_in_full_batches():
    schedule = _schedule(repeats=5, batch_size=4)
    batches = epoch_batches(6, schedule, seed=1, epoch=0)
    assert len(batches) == 30 // 4 and all(len(b) == 4 for b in batches)  # drop_last
    counts = torch.bincount(torch.tensor(sum(batches, [])), minlength=6)
    assert counts.max() <= 5 and counts.sum() == 28
    assert batches == epoch_batches(6, schedule, seed=1, epoch=0)
    assert batches != epoch_batches(6, schedule, seed=1, epoch=1)


def test_train_avd_learns_only_the_avd_network_with_the_detector_in_train_mode():
    torch.manual_seed(0)
    model = AnimationModel(ModelConfig.from_mapping(TINY))
    dataset = Clips(4)
    before = copy.deepcopy(model.state_dict())
    lrs, losses = [], []

    def record(step: int, metrics: dict[str, float]) -> None:
        lrs.append(metrics["lr"])
        losses.append(metrics["loss/avd"])

    result = fit_avd(
        model,
        dataset,
        _schedule(epochs=6, repeats=4, batch_size=4, lr=1e-2),
        torch.device("cpu"),
        seed=0,
        on_step=record,
    )
    assert result["steps"] == 6 * 4 and result["epochs"] == 6
    # 4 steps per epoch; milestones (1, 2) take effect at epochs 2 and 3 (TPSMM's step(epoch) at epoch end)
    assert lrs[:8] == pytest.approx([1e-2] * 8)  # epochs 0 and 1 (a plain per-epoch MultiStepLR drops at 1)
    assert lrs[8:12] == pytest.approx([1e-3] * 4) and lrs[12:] == pytest.approx([1e-4] * 12)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert any(k.startswith("avd.") for k in changed)
    detector = {k for k in changed if k.startswith("kp_detector.")}
    assert detector and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in detector)
    assert not {k for k in changed if not k.startswith(("avd.", "kp_detector."))}
    assert not model.avd.training and not model.kp_detector.training  # left in eval mode
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])  # it learns


def test_detector_in_eval_mode_keeps_its_statistics_and_max_steps_caps_the_run():
    model = AnimationModel(ModelConfig.from_mapping(TINY))
    before = copy.deepcopy(model.kp_detector.state_dict())
    result = fit_avd(model, Clips(4), _schedule(), torch.device("cpu"), seed=0, max_steps=5, detector_train_mode=False)
    assert result["steps"] == 5 and result["epochs"] == 1
    for key, value in model.kp_detector.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_too_small_an_epoch_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot make a batch"):
        fit_avd(
            AnimationModel(ModelConfig.from_mapping(TINY)),
            Clips(2),
            _schedule(repeats=1, batch_size=4),
            torch.device("cpu"),
            seed=0,
        )
