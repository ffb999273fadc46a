"""The paper's schedule (docs/model.md, "Trainer"): transform-dropout ramp, epoch length, which parameters
only say how long to train."""

from __future__ import annotations

from typing import Any

from cpabanim.data.loader import epoch_order, step_seed

__all__ = ["dropout_probability", "epoch_order", "step_seed", "total_steps", "changed_training_params",
           "SCHEDULE_KEYS"]

# Parameters that only say how long to train, how often to log/save or how to feed the networks: changing them
# continues a run (a larger max_steps extends a complete one) instead of starting it again. Batches do not
# depend on num_workers / prefetch_factor (cpabanim.data.loader).
SCHEDULE_KEYS = {"max_steps", "num_epochs", "checkpoint_every", "log_every", "image_every",
                 "avd_epochs", "avd_repeats", "avd_milestones", "avd_lr", "avd_random_scale", "avd_batch_size",
                 "num_workers", "prefetch_factor", "channels_last", "compile"}
# Sections whose values define what is learned (paths, tracking and the later stages do not).
TRAINING_SECTIONS = ("seed", "data", "model", "loss", "train")


def dropout_probability(epoch: int, p: dict[str, Any]) -> float:
    """Transform-dropout rate of TPSMM/CPABMM: ramps from startp to maxp, off after ``dropout_epoch``."""
    if epoch >= p["dropout_epoch"]:
        return 0.0
    ramp = epoch / max(p["dropout_inc_epoch"], 1) * p["dropout_maxp"] + p["dropout_startp"]
    return float(min(ramp, p["dropout_maxp"]))


def total_steps(batches_per_epoch: int, tp: dict[str, Any]) -> int:
    """Optimiser steps of the whole run: ``num_epochs`` epochs, capped by ``max_steps`` when it is set."""
    steps = batches_per_epoch * tp["num_epochs"]
    return min(steps, tp["max_steps"]) if tp["max_steps"] else steps


def changed_training_params(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted names of the parameters that define training and differ between a checkpoint and now."""
    from cpabanim.config.mappings import flatten

    def relevant(params: dict[str, Any]) -> dict[str, Any]:
        flat = flatten({k: params.get(k) for k in TRAINING_SECTIONS})
        return {k: v for k, v in flat.items() if not (k.startswith("train.") and k.split(".", 1)[1] in SCHEDULE_KEYS)}

    from cpabanim.config.mappings import deep_merge
    from cpabanim.config.schema import defaults

    # both sides over the built-in defaults (a key added since the checkpoint was written is its default there),
    # compared on the keys training reads now (the stage's declared keys)
    base = defaults()
    old, new = relevant(deep_merge(base, saved)), relevant(deep_merge(base, current))
    read_now = relevant(current).keys()
    return sorted(k for k in read_now if old.get(k) != new.get(k))
