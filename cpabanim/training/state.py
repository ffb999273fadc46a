"""Checkpoint and resume (docs/model.md, "Determinism and resume" and "Checkpoints").

An experiment's ``last.pt`` (the path the caller gives, :class:`cpabanim.config.paths.ExperimentPaths`) holds
the model, optimisers, schedulers, step, epoch, the recorded params, RNG states and ``complete``. A run resumes
from it unless a parameter that defines training changed: then it starts again and keeps the old file as
``last.superseded.pt``.
"""

from __future__ import annotations

import logging
import random
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cpabanim.config.paths import SUPERSEDED_NAME
from cpabanim.training.schedule import changed_training_params
from cpabanim.training.step import Optimization

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where a run stands: optimiser steps done, the epoch they are in, whether the checkpoint is complete."""

    step: int = 0
    epoch: int = 0
    complete: bool = False


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "python" in state:
        random.setstate(tuple(state["python"]) if isinstance(state["python"], list) else state["python"])


def resume_or_restart(
    path: Path,
    params: Mapping[str, Any],
    model: nn.Module,
    optimization: Optimization,
    device: torch.device,
    restart: bool,
    is_main: bool,
) -> Progress:
    """Load ``path`` into the model and optimisers and return its progress; a fresh :class:`Progress` when there is
    no checkpoint, ``restart`` is asked for, or training parameters changed (the old file is kept aside)."""
    from cpabanim.models.checkpoint import read_checkpoint

    if restart or not path.is_file():
        return Progress()
    state = read_checkpoint(path, map_location=device)
    changed = changed_training_params(state.get("params") or {}, params)
    if changed:
        # The orchestrators re-run train because a parameter it depends on changed: resuming would silently
        # keep the old model. Start again, and keep the old checkpoint rather than lose it.
        superseded = path.with_name(SUPERSEDED_NAME)
        if is_main:
            shutil.copy2(path, superseded)
        log.warning(
            "parameters changed since %s was written (%s): training from scratch; the previous "
            "checkpoint is kept as %s",
            path,
            ", ".join(changed[:8]),
            superseded,
        )
        return Progress()
    model.load_state_dict(state["model"])
    optimization.load(state["optimizers"], state["schedulers"])
    restore_rng(state.get("rng_state", {}))
    return Progress(int(state["step"]), int(state["epoch"]), bool(state.get("complete")))


def write_checkpoint(
    path: Path,
    model: nn.Module,
    optimization: Optimization,
    progress: Progress,
    params: Mapping[str, Any],
    complete: bool,
) -> Path:
    """Write ``last.pt`` atomically (``cpabanim.models.checkpoint.save_checkpoint``)."""
    from cpabanim.models.checkpoint import save_checkpoint

    return save_checkpoint(
        path,
        model,
        optimization.optimizers,
        optimization.schedulers,
        progress.step,
        progress.epoch,
        params,
        rng_state(),
        complete=complete,
    )
