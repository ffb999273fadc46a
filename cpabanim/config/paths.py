"""Where one run's files live: the one place that joins ``paths``, an experiment name and a seed.

    paths = ExperimentPaths.of(params["paths"], "tps", seed=1)
    paths.checkpoint        # models/checkpoints/tps/seed1/last.pt      (what train writes, reconstruct reads)
    paths.avd_checkpoint    # models/checkpoints/tps/avd/seed1/last.pt  (that model with its AVD network trained:
                            #                                            what avd writes, animate and demo read)
    paths.outputs           # outputs/tps/seed1                         (reconstruction/, animation/, metrics.json)
    paths.report            # outputs/report                            (the comparison of experiments, shared)

The stage declarations (:mod:`cpabanim.pipeline`) spell the same folders as path templates for the orchestrators;
a test asserts that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "last.pt"  # the training checkpoint inside an experiment's checkpoint folder
COMPLETE_MARKER = "complete.json"  # written last by the train (and the avd) stage, inside its checkpoint folder
SUPERSEDED_NAME = "last.superseded.pt"  # the previous model, kept when a training parameter changed
AVD_FOLDER = "avd"  # {paths.checkpoints}/<experiment>/avd/seed<N>: the avd stage's, beside the seed folders
TRAIN_HINT = "train one with `cpabanim train`, then `cpabanim avd`"  # what writes the model the other stages read
REPORT_FOLDER = "report"  # {paths.outputs}/report: the comparison, so no experiment may be called "report"


def seed_folder(seed: int) -> str:
    """``seed3``: one run's folder inside its experiment's."""
    return f"seed{int(seed)}"


@dataclass(frozen=True)
class ExperimentPaths:
    """The folders of the run of experiment ``name`` with training seed ``seed`` under the ``paths`` section."""

    name: str
    seed: int
    checkpoints: Path
    avd: Path
    outputs: Path
    report: Path

    @classmethod
    def of(cls, paths: Mapping[str, Any], name: str, seed: int) -> ExperimentPaths:
        """From the ``paths`` params section (``checkpoints``, ``outputs``), the experiment's name and the seed."""
        outputs, checkpoints = Path(str(paths["outputs"])), Path(str(paths["checkpoints"])) / name
        run = Path(name) / seed_folder(seed)
        avd = checkpoints / AVD_FOLDER / seed_folder(seed)
        return cls(name, seed, checkpoints / seed_folder(seed), avd, outputs / run, outputs / REPORT_FOLDER)

    @property
    def checkpoint(self) -> Path:
        """The experiment's training checkpoint (``last.pt``)."""
        return self.checkpoints / CHECKPOINT_NAME

    @property
    def avd_checkpoint(self) -> Path:
        """The avd stage's model: the training checkpoint's with its AVD network trained (``avd/seed<N>/last.pt``)."""
        return self.avd / CHECKPOINT_NAME

    @property
    def complete_marker(self) -> Path:
        return self.checkpoints / COMPLETE_MARKER

    @property
    def superseded(self) -> Path:
        return self.checkpoints / SUPERSEDED_NAME
