"""What each experiment's runs recorded they ran with: the parameter columns of the comparison table.

Read from the records, never re-resolved from today's ``params.yaml`` and ``experiments/<name>.yaml``, which may
have changed since the experiment ran (docs/pipeline.md, "Experiments side by side"). Per stage of the experiment:

- ``train``: the checkpoint's own record (``last.pt``'s ``params``: what training ran with), else the params of
  the newest finished MLflow ``train`` run of the experiment;
- ``avd``: the same from the avd stage's ``last.pt`` (its record holds the training's with the AVD keys merged in);
- ``reconstruct``, ``animate``, ``evaluate``: the params of the stage's newest finished MLflow run of the
  experiment;
- neither: ``unknown``; its values are shown as ``unknown``, never guessed.

Values are strings as MLflow logs them (:func:`cpabanim.tracking.provenance.flat_params`), so that both sources
compare; paths, tracking, the experiment's name and its seed are left out (they differ without changing what the
experiment is: its runs differ only in the seed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cpabanim.errors import CpabanimError
from cpabanim.tracking import provenance, runs, store

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
CHECKPOINT_SOURCE = "last.pt"
# the stages whose checkpoint records what they ran with -> the input of the report naming their folder
CHECKPOINT_STAGES = {"train": "checkpoints", "avd": "avd_checkpoints"}
MLFLOW_SOURCE = "MLflow"
LEFT_OUT = ("paths.", "tracking.")
LEFT_OUT_KEYS = ("experiment", "seed", "seeds")


@dataclass(frozen=True)
class Recorded:
    """One experiment's recorded parameters: dotted key -> value, and stage -> where its values come from."""

    values: dict[str, str]
    sources: dict[str, str]

    def describe(self) -> str:
        """The sources in one cell: ``train: last.pt; reconstruct, animate, evaluate: MLflow``."""
        stages_of: dict[str, list[str]] = {}
        for stage, source in self.sources.items():
            stages_of.setdefault(source, []).append(stage)
        return "; ".join(f"{', '.join(stages)}: {source}" for source, stages in stages_of.items())


def comparable(values: Mapping[str, Any]) -> dict[str, str]:
    """The flattened values as MLflow logs them, without the keys that never change a result."""
    flat = provenance.flat_params(dict(values))
    return {k: v for k, v in flat.items() if k not in LEFT_OUT_KEYS and not k.startswith(LEFT_OUT)}


def checkpoint_record(checkpoints: Path) -> dict[str, str] | None:
    """The params ``last.pt`` recorded (None: no checkpoint, an unreadable one, or one that records none)."""
    from cpabanim.config.paths import CHECKPOINT_NAME
    from cpabanim.models.checkpoint import read_checkpoint

    path = checkpoints / CHECKPOINT_NAME
    if not path.is_file():
        return None
    try:
        recorded = read_checkpoint(path).get("params") or {}
    except CpabanimError as err:
        log.warning("no recorded params from %s: %s", path, err)
        return None
    return comparable(recorded) or None


def mlflow_record(experiment: str, seed: int, stage: str, tracking: Mapping[str, Any]) -> dict[str, str] | None:
    """The params of the newest finished ``stage`` run of ``experiment``'s ``seed`` (None: tracking off, or no
    such run)."""
    settings = {"tracking": tracking}  # the store reads its settings from params' tracking section
    if not store.enabled(settings):
        return None
    found = runs.mlflow_client().search_runs(
        [store.configure(settings)],
        filter_string=(
            f"tags.`{provenance.TAG_STAGE}` = '{stage}' and tags.`{provenance.TAG_EXPERIMENT}` = '{experiment}'"
            f" and tags.`{provenance.TAG_SEED}` = '{seed}'"
            f" and tags.`{provenance.TAG_ROLE}` = 'stage' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return comparable(found[0].data.params) if found and found[0].data.params else None


def recorded_params(
    experiment: str, seed: int, paths: Mapping[str, Path], stages: Sequence[str], tracking: Mapping[str, Any]
) -> Recorded:
    """What the run of ``experiment`` with ``seed`` recorded in its ``stages`` (see the module docstring);
    ``paths``: its folders by input name (the checkpoint folders of :data:`CHECKPOINT_STAGES`); ``tracking``: the
    tracking section of the params (its MLflow runs)."""
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for stage in stages:
        folder = paths.get(CHECKPOINT_STAGES.get(stage, ""))
        record, source = (checkpoint_record(folder), CHECKPOINT_SOURCE) if folder is not None else (None, "")
        if record is None:
            record, source = mlflow_record(experiment, seed, stage, tracking), MLFLOW_SOURCE
        sources[stage] = source if record is not None else UNKNOWN
        for key, value in (record or {}).items():
            if values.setdefault(key, value) != value:
                log.warning(
                    "%s: %s is %s in the %s record but %s in an earlier stage's; the table shows %s",
                    experiment,
                    key,
                    value,
                    stage,
                    values[key],
                    values[key],
                )
    return Recorded(values, sources)
