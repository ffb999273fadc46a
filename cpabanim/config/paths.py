"""Where one experiment's files live: the one place that joins ``paths`` and an experiment name.

    paths = ExperimentPaths.of(params["paths"], "tps")
    paths.checkpoint        # models/checkpoints/tps/last.pt  (what train writes, what reconstruct and demo read)
    paths.outputs           # outputs/tps                     (reconstruction/, animation/, metrics.json)
    paths.report            # outputs/report                  (the comparison of experiments, shared)

The stage declarations (:mod:`cpabanim.pipeline`) spell the same folders as path templates for the orchestrators;
a test asserts that both agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "last.pt"  # the training checkpoint inside an experiment's checkpoint folder
COMPLETE_MARKER = "complete.json"  # written last by the train stage, inside the checkpoint folder
SUPERSEDED_NAME = "last.superseded.pt"  # the previous model, kept when a training parameter changed
REPORT_FOLDER = "report"  # {paths.outputs}/report: the comparison, so no experiment may be called "report"


@dataclass(frozen=True)
class ExperimentPaths:
    """The folders of experiment ``name`` under the project's ``paths`` section."""

    name: str
    checkpoints: Path
    outputs: Path
    report: Path

    @classmethod
    def of(cls, paths: Mapping[str, Any], name: str) -> ExperimentPaths:
        """From the ``paths`` params section (``checkpoints``, ``outputs``) and the experiment's name."""
        outputs = Path(str(paths["outputs"]))
        return cls(name, Path(str(paths["checkpoints"])) / name, outputs / name, outputs / REPORT_FOLDER)

    @property
    def checkpoint(self) -> Path:
        """The experiment's training checkpoint (``last.pt``)."""
        return self.checkpoints / CHECKPOINT_NAME

    @property
    def complete_marker(self) -> Path:
        return self.checkpoints / COMPLETE_MARKER

    @property
    def superseded(self) -> Path:
        return self.checkpoints / SUPERSEDED_NAME
