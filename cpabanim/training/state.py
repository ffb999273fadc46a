"""Checkpoint and resume (docs/model.md, "Determinism and resume" and "Checkpoints").

An experiment's ``last.pt`` (the path the caller gives, :class:`cpabanim.config.paths.ExperimentPaths`) holds
the model, optimisers, schedulers, step, epoch, the recorded params, RNG states and ``complete``. A run resumes
from it unless a parameter that defines training changed: then it starts again and keeps the old file, numbered,
as ``superseded/001.pt``, ``002.pt``, ... beside a ``.json`` of what it was (step, params digest, the changed keys,
when it was set aside): a restart never overwrites nor deletes a trained model (:func:`keep_superseded`;
``cpabanim checkpoints`` lists them, :func:`superseded_models`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
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
from cpabanim.errors import CpabanimError
from cpabanim.training.schedule import changed_training_params
from cpabanim.training.step import Optimization

log = logging.getLogger(__name__)

SUPERSEDED_FOLDER = "superseded"  # inside the checkpoint folder: 001.pt, 002.pt, ... and their .json
_HELD_FOLDERS: set[Path] = set()  # checkpoint folders whose lock this process holds (checkpoint_folder_lock)


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
    from cpabanim.models.checkpoint import load_model_state, read_checkpoint

    if restart or not path.is_file():
        return Progress()
    state = read_checkpoint(path, map_location=device)
    changed = changed_training_params(state.get("params") or {}, params)
    if changed:
        # The orchestrators re-run train because a parameter it depends on changed: resuming would silently
        # keep the old model. Start again, and keep the old checkpoint rather than lose it.
        kept = keep_superseded(path, state, changed) if is_main else path.parent / SUPERSEDED_FOLDER
        log.warning(
            "parameters changed since %s was written (%s): training from scratch; the previous "
            "checkpoint is kept as %s",
            path,
            ", ".join(changed[:8]),
            kept,
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
    load_model_state(model, state["model"], path)
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
    """Hold the checkpoint folder's exclusive lock for the block and clear stale temporary files under it (the
    main process only: the other ranks never write there). Re-entrant within a process: the train stage holds it
    from training through the AVD network to the marker, and :func:`cpabanim.training.loop.train` inside takes
    it again, so that no second trainer can start between the two (a second flock of this process on a new
    descriptor would refuse this process itself)."""
    from cpabanim.models.checkpoint import hold_checkpoint_folder, remove_stale_temp_files

    key = Path(os.path.abspath(folder))
    if not is_main or key in _HELD_FOLDERS:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with hold_checkpoint_folder(folder):
        _HELD_FOLDERS.add(key)
        try:
            remove_stale_temp_files(folder)
            yield
        finally:
            _HELD_FOLDERS.discard(key)


# ---------------------------------------------------------------------------------------------------------
# superseded models: every one kept, numbered, never overwritten


def params_digest(params: Mapping[str, Any]) -> str:
    """A short sha256 of recorded params (canonical JSON): tells the runs of a folder apart at a glance."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _next_number(folder: Path) -> int:
    """One past the highest ``NNN.pt`` / ``NNN.json`` in ``folder`` (1 for none): numbers are never reused."""
    numbers = [int(p.stem) for p in folder.glob("*") if p.stem.isdigit() and p.suffix in (".pt", ".json")]
    return max(numbers, default=0) + 1


def _place(source: Path, target: Path, move: bool) -> None:
    """``target`` becomes ``source``'s content without ever overwriting anything: a hard link (instant, no second
    copy on disk: saves replace ``last.pt`` by a new file, so the link keeps the old model), else a copy through a
    temporary file linked into place; ``os.link`` fails on an existing target. ``move``: ``source`` goes after."""
    from cpabanim.files import temp_path_for

    if not source.is_symlink():
        try:
            os.link(source, target)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: copy
            pass
        else:
            if move:
                source.unlink()
            return
    temp = temp_path_for(target)
    try:
        shutil.copy2(source, temp)
        os.link(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    if move:
        source.unlink()


def _set_aside(source: Path, folder: Path, record: dict[str, Any], move: bool) -> Path:
    """Place ``source`` at the next free ``folder/NNN.pt`` (:func:`_place`) and write its ``NNN.json``; -> the new
    path. The caller holds the checkpoint folder's lock, so no other process numbers files there."""
    from cpabanim.files import describe_os_error, write_json

    number = _next_number(folder)
    while (folder / f"{number:03d}.pt").exists():
        number += 1
    target = folder / f"{number:03d}.pt"
    try:
        _place(source, target, move)
    except OSError as exc:
        raise CpabanimError(
            f"cannot keep the superseded checkpoint {source} as {target}: {describe_os_error(exc, target)}; "
            "nothing was deleted (free some space, or move it away yourself, and run again)"
        ) from exc
    write_json(target.with_suffix(".json"), {**record, "file": target.name, "number": number})
    return target


def keep_superseded(path: Path, state: Mapping[str, Any], changed: list[str]) -> Path:
    """Keep the checkpoint ``path`` (its loaded ``state``) as the next ``superseded/NNN.pt`` before a restart
    overwrites it, with ``NNN.json``: its step, complete flag, params digest, the keys that changed and the
    date. A ``last.superseded.pt`` of an older cpabanim is moved in first (it keeps its model). A ``last.pt``
    already kept (the same file: a restart stopped before it saved) is not kept twice."""
    folder = path.parent / SUPERSEDED_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    legacy = path.with_name(SUPERSEDED_NAME)
    if legacy.is_file():
        _set_aside(legacy, folder, {"from": SUPERSEDED_NAME, "kept_at": _now()}, move=True)
    for kept in folder.glob("*.pt"):  # a restart killed before its first save: last.pt is still the kept model
        if os.path.samefile(kept, path):
            return kept
    params = state.get("params") or {}
    record = {
        "step": int(state.get("step", 0)),
        "epoch": int(state.get("epoch", 0)),
        "complete": bool(state.get("complete")),
        "params_digest": params_digest(params),
        "changed": list(changed),
        "kept_at": _now(),
    }
    return _set_aside(path, folder, record, move=False)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def superseded_models(checkpoint_folder: Path) -> list[dict[str, Any]]:
    """The models kept in ``checkpoint_folder/superseded`` (oldest first): each record of its ``.json`` with
    ``path``; a model whose ``.json`` is missing or unreadable is listed with what its file says (its size)."""
    folder = Path(checkpoint_folder) / SUPERSEDED_FOLDER
    if not folder.is_dir():
        return []
    kept = []
    for model in sorted(folder.glob("*.pt")):
        try:
            record = json.loads(model.with_suffix(".json").read_text())
        except (OSError, ValueError):
            record = {"note": "no readable .json beside it"}
        kept.append({**record, "path": model, "bytes": model.stat().st_size})
    return kept
