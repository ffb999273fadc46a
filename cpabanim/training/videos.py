"""The training videos as a dataset: the configured ``FramesDataset`` over a processed folder, for the train
stage (:func:`cpabanim.training.loop.build_dataset`) and the avd stage (cpabanim/training/avd_stage.py)."""

from __future__ import annotations

from pathlib import Path

from cpabanim.config.typed import DataConfig
from cpabanim.errors import DataError


def frames_dataset(processed: Path, data: DataConfig, masks: Path | None = None, num_repeats: int | None = None):
    """The FramesDataset of ``processed``'s training videos with ``data``'s frame size, identity sampling and
    augmentation; with the region masks of ``masks`` when given (the semantic loss). An epoch is the train set
    repeated ``data.num_repeats`` times (the paper's num_repeats) unless ``num_repeats`` is given (the AVD stage
    makes its own repeats: 1)."""
    from cpabanim.data.dataset import FramesDataset

    if not (processed / "train").is_dir() and not (processed / "manifest.json").is_file():
        raise DataError(f"no training videos in {processed}: run `cpabanim preprocess` first")
    if masks is not None and not masks.is_dir():
        raise DataError(
            f"loss.semantic=masks needs region masks in {masks}: run `cpabanim masks` "
            "first (or --set loss.semantic=off)"
        )
    augmentation = data.augmentation.to_dict() if data.augmentation is not None else None
    return FramesDataset(
        str(processed),
        split="train",
        frame_shape=(data.frame_size, data.frame_size, 3),
        id_sampling=data.id_sampling,
        augmentation=augmentation,
        num_repeats=data.num_repeats if num_repeats is None else num_repeats,
        masks_root=str(masks) if masks is not None else None,
    )
