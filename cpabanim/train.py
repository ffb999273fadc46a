"""Training, as the train stage (cpabanim/stages/train.py) calls it: the main run, then the AVD stage.

The library code lives in :mod:`cpabanim.training` (loop, step, checkpoint/resume, schedule, AVD) and the input
pipeline in :mod:`cpabanim.data.loader`; this module joins them and re-exports the names tests import from here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


from cpabanim.data.loader import epoch_order, step_seed
from cpabanim.errors import CpabanimError
from cpabanim.training.images import image_grid
from cpabanim.device import resolve_device
from cpabanim.training.loop import build_dataset, train
from cpabanim.training.schedule import changed_training_params, dropout_probability
from cpabanim.training.step import TrainingStep

__all__ = ["train", "train_avd", "TrainingStep", "dropout_probability", "epoch_order", "step_seed", "image_grid",
           "build_dataset", "changed_training_params"]

log = logging.getLogger(__name__)


def train_avd(params, dataset=None) -> dict[str, Any]:
    """After training, TPSMM's AVD stage (cpabanim/training/avd.py) on the complete checkpoint, written back with
    the schedule it ran (``avd_schedule``); skipped when that schedule already ran. ``train.avd_epochs: 0`` skips it.

    ``params``: seed, device, the data keys of the training set, ``train`` and ``paths.checkpoints``.
    """
    from dataclasses import asdict

    from cpabanim import tracking
    from cpabanim.config import deep_merge
    from cpabanim.models.checkpoint import CHECKPOINT_NAME, read_checkpoint, save_checkpoint
    from cpabanim.models.full import AnimationModel
    from cpabanim.training.avd import AVDSchedule
    from cpabanim.training.avd import train_avd as run_avd_schedule

    tp = params["train"]
    path = Path(params["paths"]["checkpoints"]) / CHECKPOINT_NAME
    state = read_checkpoint(path)
    if not state.get("complete"):
        raise CpabanimError(f"{path} is not complete: finish `cpabanim train` before training the AVD network")
    schedule = AVDSchedule.from_train_params(tp)
    if state.get("avd_schedule") == _plain(asdict(schedule)):
        log.info("AVD network already trained with this schedule (%s)", path)
        return {"steps": 0, "loss": None}
    device = resolve_device(params["device"], 0)
    model = AnimationModel(state["model_params"]).to(device)
    model.load_state_dict(state["model"])
    if dataset is None:  # the AVD stage makes its own repeats: one pass over the training videos
        dataset = build_dataset(deep_merge(params, {"data": {"num_repeats": 1}}), needs_masks=False)
    log_every = int(tp["log_every"])

    def on_step(step: int, values: dict[str, float]) -> None:
        if step % log_every == 0:
            tracking.log_metrics(values, step=step)

    result = run_avd_schedule(model, dataset, schedule, device, seed=int(params["seed"]), on_step=on_step)
    save_checkpoint(path, model, state["optimizers"], state["schedulers"], state["step"], state["epoch"],
                    state["params"], state["rng_state"], complete=True,
                    extra={"avd_schedule": _plain(asdict(schedule)), "avd_trained": True, "avd_steps": result["steps"]})
    log.info("AVD network trained: %d steps, %d epochs, last loss %.4g", result["steps"], result["epochs"],
             result["loss"])
    return result


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
