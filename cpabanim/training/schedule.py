"""The paper's schedule (docs/model.md, "Trainer"): transform-dropout ramp, epoch length, and which parameters
a run resumes across (those that do not define what training learns: ``cpabanim.config.typed.TRAIN_HOW_LONG`` and
``TRAIN_HOW_IT_RUNS``, their one home, ``TrainConfig.HOW_IT_LAUNCHES``, and the avd stage's keys)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cpabanim.config.typed import TRAIN_AVD, TRAIN_AVD_HOW_IT_RUNS, TRAIN_HOW_IT_RUNS, TRAIN_HOW_LONG, TrainConfig
from cpabanim.data.loader import epoch_order, step_seed

__all__ = ["dropout_probability", "epoch_order", "step_seed", "total_steps", "changed_training_params", "SCHEDULE_KEYS"]

# Keys of ``train`` a run resumes across: how long it trains, how it is fed (batches do not depend on
# num_workers / prefetch_factor, cpabanim.data.loader) and launched, never what it learns; and the avd stage's
# (checkpoints written before that stage had its own recorded them).
SCHEDULE_KEYS = frozenset(
    (*TRAIN_HOW_LONG, *TRAIN_HOW_IT_RUNS, *TrainConfig.HOW_IT_LAUNCHES, *TRAIN_AVD, *TRAIN_AVD_HOW_IT_RUNS)
)
# Sections whose values define what is learned (paths, tracking and the later stages do not).
TRAINING_SECTIONS = ("seed", "data", "model", "loss", "train")


def dropout_probability(epoch: int, train: TrainConfig) -> float:
    """Transform-dropout rate of TPSMM/CPABMM: ramps from startp to maxp, off after ``dropout_epoch``."""
    if epoch >= train.dropout_epoch:
        return 0.0
    ramp = epoch / max(train.dropout_inc_epoch, 1) * train.dropout_maxp + train.dropout_startp
    return float(min(ramp, train.dropout_maxp))


def total_steps(batches_per_epoch: int, train: TrainConfig) -> int:
    """Optimiser steps of the whole run: ``num_epochs`` epochs, capped by ``max_steps`` when it is set."""
    steps = batches_per_epoch * train.num_epochs
    return min(steps, train.max_steps) if train.max_steps else steps


def changed_training_params(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Dotted names of the parameters that define training and differ between a checkpoint's recorded params
    and the current ones (both as the checkpoint records them: plain nested dicts)."""
    from cpabanim.config.mappings import deep_merge, flatten
    from cpabanim.config.schema import defaults

    def relevant(params: Mapping[str, Any]) -> dict[str, Any]:
        flat = flatten({k: params.get(k) for k in TRAINING_SECTIONS})
        return {k: v for k, v in flat.items() if not (k.startswith("train.") and k.split(".", 1)[1] in SCHEDULE_KEYS)}

    # both sides over the built-in defaults (a key added since the checkpoint was written is its default there),
    # compared on the keys training reads now (the stage's declared keys)
    base = defaults()
    old, new = relevant(deep_merge(base, saved)), relevant(deep_merge(base, current))
    read_now = relevant(current).keys()
    return sorted(k for k in read_now if old.get(k) != new.get(k))
