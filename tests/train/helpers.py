"""A tiny in-memory dataset yielding FramesDataset-like items, tiny-model params for fast tests, and the
training job of such params (its checkpoint: ``{paths.checkpoints}/last.pt``, as the tests name it)."""

from __future__ import annotations

import math

import torch

from cpabanim.config.layers import load_params


class MovingBlobDataset(torch.utils.data.Dataset):
    """Items {source, driving: (3, S, S) in [0, 1], name, source_mask, driving_mask} of a coloured disc that moves.

    Deterministic per index: no ``sample(index, generator)`` method, the loader indexes it directly.
    """

    def __init__(self, num_items: int = 8, size: int = 32):
        self.num_items = num_items
        self.size = size

    def __len__(self) -> int:
        return self.num_items

    def _frame(self, t: float):
        s = self.size
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        cx, cy = 0.4 * math.cos(t), 0.4 * math.sin(t)
        disc = (((xs - cx) ** 2 + (ys - cy) ** 2) < 0.12).float()
        image = torch.stack([0.2 + 0.7 * disc, 0.3 + 0.2 * (xs + 1) / 2, 0.8 - 0.6 * disc])
        mask = (disc + 1).long()  # 1 = background region, 2 = the disc
        return image.clamp(0, 1), mask

    def __getitem__(self, index: int):
        source, source_mask = self._frame(0.3 * index)
        driving, driving_mask = self._frame(0.3 * index + 0.5)
        return {
            "source": source,
            "driving": driving,
            "name": f"blob{index}",
            "source_mask": source_mask,
            "driving_mask": driving_mask,
        }


def tiny_params(tmp_path, motion: str = "tps", **train) -> dict:
    """params.yaml with a tiny model (1 group, 8 channels), batch 2, checkpoints under tmp_path."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    overrides = [
        f"model.motion={motion}",
        "model.num_cpab=1",
        "model.bg=true",
        "model.generator={block_expansion: 8, max_features: 32, num_down_blocks: 2}",
        "model.dense_motion={block_expansion: 8, max_features: 32, num_blocks: 2, scale_factor: 0.5}",
        "model.avd={id_bottle_size: 8, pose_bottle_size: 8}",
        "loss.scales=[1.0, 0.5]",
        "train.batch_size=2",
        "train.num_epochs=2",
        "train.epoch_milestones=[1]",
        "train.dropout_epoch=1",
        "train.checkpoint_every=2",
        "train.num_workers=0",
        f"paths.checkpoints={tmp_path / 'ckpt'}",
        f"paths.weights={tmp_path / 'weights'}",
    ]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_params(root / "params.yaml", overrides=overrides)


def job_of(params):
    """The :class:`TrainingJob` of ``params``, writing ``{paths.checkpoints}/last.pt``."""
    from pathlib import Path

    from cpabanim.config.paths import CHECKPOINT_NAME
    from cpabanim.training.job import TrainingJob

    return TrainingJob.of(params, checkpoint=Path(params["paths"]["checkpoints"]) / CHECKPOINT_NAME)
