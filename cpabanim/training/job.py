"""What one training run is given, typed: the sections that define what is learned, where its files are, and
the params its checkpoint records.

    job = TrainingJob.of(cfg, checkpoint=io.outputs["checkpoints"] / CHECKPOINT_NAME,
                         processed=io.inputs["processed"], masks=io.inputs["masks"])
    train(job)

The checkpoint path is always given (the train stage takes it from its declared output); nothing below derives
it from ``paths``. ``recorded`` is the params mapping the job was made from, as a plain dict: the checkpoint
stores it and a resume compares it (:func:`cpabanim.training.schedule.changed_training_params`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cpabanim.config.typed import DataConfig, LossConfig, ModelConfig, TrainConfig


@dataclass(frozen=True)
class TrainingJob:
    """One training run: seed, data / model / loss / train sections, device, the files it reads and writes."""

    seed: int
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    train: TrainConfig
    checkpoint: Path  # last.pt: written by training and resumed from (the avd stage reads it)
    processed: Path  # train/ frame folders
    masks: Path  # region masks (loss.semantic = masks)
    weights: Path  # pretrained loss networks (VGG, DINO)
    device: str = "auto"
    recorded: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def of(
        cls, params: Mapping[str, Any], checkpoint: Path, processed: Path | None = None, masks: Path | None = None
    ) -> TrainingJob:
        """From (a stage's view of) the params: ``seed``, ``device``, ``data``, ``model``, ``loss``, ``train`` and
        ``paths.weights`` (``paths.processed`` / ``paths.masks`` unless given). ``checkpoint``: the file to write."""
        paths = params["paths"]
        return cls(
            seed=int(params["seed"]),
            data=DataConfig.from_mapping(params["data"]),
            model=ModelConfig.from_mapping(params["model"]),
            loss=LossConfig.from_mapping(params["loss"]),
            train=TrainConfig.from_mapping(params["train"]),
            checkpoint=Path(checkpoint),
            processed=Path(processed if processed is not None else paths["processed"]),
            masks=Path(masks if masks is not None else paths["masks"]),
            weights=Path(paths["weights"]),
            device=str(params.get("device", "auto")),
            recorded=copy.deepcopy(params),  # a frozen Section deep-copies to a plain dict
        )

    def with_train(self, **changes: Any) -> TrainingJob:
        """The same job with ``train`` fields changed (tests, the AVD schedule); ``recorded`` follows."""
        from dataclasses import replace

        recorded = copy.deepcopy(self.recorded)
        recorded.setdefault("train", {}).update(changes)
        return replace(self, train=self.train.replace(**changes), recorded=recorded)

    def without_recorded(self, keys: tuple[str, ...]) -> TrainingJob:
        """The same job whose checkpoint does not record the dotted ``keys`` (read by the stage, never what the
        training learns with: the train stage's view of the avd stage's keys)."""
        from dataclasses import replace

        recorded = copy.deepcopy(self.recorded)
        for key in keys:
            *parents, name = key.split(".")
            node = recorded
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(name, None)
        return replace(self, recorded=recorded)
