"""Checkpoint and resume (docs/model.md, "Determinism and resume" and "Checkpoints").

An experiment's ``last.pt`` (the path the caller gives, :class:`cpabanim.config.paths.ExperimentPaths`) holds
the model, optimisers, schedulers, step, epoch, the recorded params, RNG states and ``complete``. A run resumes
from it unless a parameter that defines training changed: then it starts again and keeps the old file as
``last.superseded.pt``.
"""

from __future__ import annotations

import contextlib
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
    world: int = 1,
) -> Progress:
    """Load ``path`` into the model and optimisers and return its progress; a fresh :class:`Progress` when there is
    no checkpoint, ``restart`` is asked for, or training parameters changed (the old file is kept aside).

    ``world``: this run's number of processes. A run resumes across another one (moving to a node with more GPUs
    must not throw the training away), with a warning: each process takes ``batch_size`` items a step, so the
    parameters are then those of neither run."""
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
    saved_world = int(state.get("world", 1))
    if saved_world != world and is_main:
        log.warning(
            "%s was written by %d training process(es), this run has %d: it resumes, but each process takes "
            "train.batch_size items a step, so the batches from here on differ from either run's",
            path,
            saved_world,
            world,
        )
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
    world: int = 1,
) -> Path:
    """Write ``last.pt`` atomically (``cpabanim.models.checkpoint.save_checkpoint``), with the number of processes
    that trained it (``world``: a resume with another number warns)."""
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
        extra={"world": int(world)},
    )


@contextlib.contextmanager
def checkpoint_folder_lock(folder: Path, is_main: bool):
    """Hold the checkpoint folder's exclusive lock for the whole run and clear stale temporary files under it
    (the main process only: the other ranks never write there)."""
    from cpabanim.models.checkpoint import hold_checkpoint_folder, remove_stale_temp_files

    if not is_main:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with hold_checkpoint_folder(folder):
        remove_stale_temp_files(folder)
        yield
