"""Checkpoints: one file holds the model, optimisers, schedulers, counters, params and RNG states.

Promises (docs/reliability.md lists the test behind each):

- **Atomic**: written to a temporary file in the same folder, flushed to disk, then ``os.replace``-d over
  ``last.pt``: an interrupted or failed save leaves either the previous checkpoint or the new one, never a
  truncated file. A failed write (full disk, read-only folder) removes its temporary file and raises one
  :class:`CpabanimError` line naming the path.
- **Safe to load**: every file is read with ``torch.load(..., weights_only=True)`` after its zip directory is
  checked (``cpabanim.weights.safe_torch_load``: no decompression bomb); a checkpoint stores only plain
  containers, numbers, strings and tensors (numpy RNG arrays are stored as tensors). A file that needs anything
  else to load (a pickle that would run code) is refused, never retried unsafely. Its recorded ``model_params``
  are checked against the schema's ranges before a model is built from them, and its tensors against the
  model's shapes before they are loaded (one line naming the first that differs).
- **One trainer per folder**: :func:`hold_checkpoint_folder` takes an exclusive lock for as long as training runs.
- **No orphans**: :func:`remove_stale_temp_files` clears what a killed save left behind; the temporary files
  and the lock file match ``.dvcignore`` so DVC never hashes them.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim.errors import CpabanimError
from cpabanim.files import describe_os_error, write_atomically
from cpabanim.weights import safe_torch_load

# 1: numpy RNG state pickled as a numpy array (loads with weights_only through _legacy_numpy_globals);
# 2: every numpy array / scalar stored as a tensor / Python number (plain weights_only content).
FORMAT_VERSION = 2

LOCK_NAME = ".cpabanim-train.lock"  # inside the checkpoint folder, also in .dvcignore
_TEMP_PATTERN = re.compile(r"^\..+\.tmp\d+$")
_NDARRAY_TAG = "__cpabanim_ndarray__"  # marks a numpy array stored as a tensor (see _to_plain / _from_plain)


# ---------------------------------------------------------------------------------------------------------
# what a checkpoint may hold: plain containers and tensors


def _rebuild(value: Any, items: list[Any]) -> Any:
    """``value`` (dict items / list / tuple) rebuilt from converted ``items``; ``value`` itself when nothing
    changed, so a state dict keeps its type and its ``_metadata`` (module versions ``load_state_dict`` reads)."""
    if isinstance(value, dict):
        if all(new is old for (_, new), old in zip(items, value.values())):
            return value
        rebuilt = type(value)(items) if type(value) is not dict else dict(items)
        if hasattr(value, "_metadata"):
            rebuilt._metadata = value._metadata
        return rebuilt
    if all(new is old for new, old in zip(items, value)):
        return value
    return type(value)(items)


def _to_plain(value: Any) -> Any:
    """``value`` with every numpy array turned into a tagged tensor (or list, for non-numeric dtypes) and every
    numpy scalar into a Python number, so that ``torch.load(weights_only=True)`` reads it back and
    :func:`_from_plain` restores it exactly. Dicts, lists and tuples keep their type."""
    if isinstance(value, np.ndarray):
        kind = value.dtype.kind
        if kind in "iu":  # torch lacks uint32/uint64 kernels: int64 holds RNG keys exactly (uint64 wraps both ways)
            data: Any = torch.from_numpy(np.ascontiguousarray(value.astype(np.int64)))
        elif kind in "bfc":
            data = torch.from_numpy(np.ascontiguousarray(value))
        else:  # strings, objects, dates: plain nested lists
            data = value.tolist()
        return {_NDARRAY_TAG: data, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return _rebuild(value, [(k, _to_plain(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):  # namedtuples stay as they are
        return _rebuild(value, [_to_plain(v) for v in value])
    return value


def _from_plain(value: Any) -> Any:
    """Inverse of :func:`_to_plain`: tagged entries back to numpy arrays of their original dtype and shape."""
    if isinstance(value, dict):
        if _NDARRAY_TAG in value:
            data = value[_NDARRAY_TAG]
            array = data.cpu().numpy() if isinstance(data, torch.Tensor) else np.array(data, dtype=object)
            return array.astype(np.dtype(value["dtype"])).reshape(value["shape"])
        return _rebuild(value, [(k, _from_plain(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return _rebuild(value, [_from_plain(v) for v in value])
    return value


# ---------------------------------------------------------------------------------------------------------
# writing


def save_checkpoint(
    path: str | Path,
    model,
    optimizers: dict[str, Any] | None = None,
    schedulers: dict[str, Any] | None = None,
    step: int = 0,
    epoch: int = 0,
    params: dict[str, Any] | None = None,
    rng_state: dict[str, Any] | None = None,
    complete: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint to ``path`` atomically and return the path (``extra``: more top-level entries).

    Everything is stored as plain containers and tensors (numpy RNG arrays as tensors), so that
    :func:`read_checkpoint` loads it with ``weights_only=True`` and gives the same values back.
    """
    path = Path(path)
    model = getattr(model, "module", model)  # unwrap DDP
    state = {
        "format": FORMAT_VERSION,
        "model_params": model.params,
        "model": model.state_dict(),
        "optimizers": {k: v if isinstance(v, dict) else v.state_dict() for k, v in (optimizers or {}).items()},
        "schedulers": {k: v if isinstance(v, dict) else v.state_dict() for k, v in (schedulers or {}).items()},
        "step": int(step),
        "epoch": int(epoch),
        "params": params or {},
        "rng_state": rng_state or {},
        "complete": bool(complete),
        **(extra or {}),
    }
    return write_atomically(
        path, lambda handle: torch.save(_to_plain(state), handle), lambda tmp: _check_loadable(tmp, path)
    )


def _check_loadable(written: Path, path: Path) -> None:
    """Refuse to publish a checkpoint that :func:`read_checkpoint` would refuse (an object that is not a plain
    container or tensor slipped into params / extra): better a clear error now than an unloadable file later."""
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(written)
    if unsafe:
        raise CpabanimError(
            f"checkpoint {path} would need {', '.join(sorted(unsafe))} to load; only plain "
            "containers, numbers, strings and tensors may be stored (convert them before saving)"
        )


# ---------------------------------------------------------------------------------------------------------
# reading


def read_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """The checkpoint dict (numpy RNG arrays restored); a missing, corrupt or unsafe file, or one whose recorded
    ``model_params`` the schema refuses (:func:`model_params_problem`), raises :class:`CpabanimError`. Reads
    format 1 (numpy arrays pickled) and format 2 alike."""
    path = Path(path)
    if not path.is_file():
        raise CpabanimError(f"checkpoint {path} not found (train first: `cpabanim train`)")
    state = safe_torch_load(path, "checkpoint", "delete it and train again (`cpabanim train`)", map_location)
    if not isinstance(state, dict) or "model" not in state or "model_params" not in state:
        raise CpabanimError(f"checkpoint {path} is not a cpabanim checkpoint (no model state)")
    problem = model_params_problem(state["model_params"])
    if problem:
        raise CpabanimError(f"checkpoint {path} is not a cpabanim checkpoint ({problem})")
    return _from_plain(state)


def _describe_model_error(error) -> str:
    """One schema violation of recorded model params in words: ``model.motion 'lstm' is not one of cpab, tps``."""
    where = ".".join(["model", *(str(p) for p in error.absolute_path)])
    value, bound = error.instance, error.validator_value
    if error.validator == "enum":
        return f"{where} {value!r} is not one of {', '.join(str(v) for v in bound)}"
    if error.validator in ("maximum", "exclusiveMaximum"):
        return f"{where} {value!r} is above the schema's maximum {bound}"
    if error.validator in ("minimum", "exclusiveMinimum"):
        return f"{where} {value!r} is below the schema's minimum {bound}"
    if error.validator == "additionalProperties" and isinstance(value, Mapping):
        known = error.schema.get("properties", {})
        return "; ".join(f"{where}.{key}: no such parameter" for key in sorted(map(str, value)) if key not in known)
    if error.validator == "type":
        return f"{where} {value!r} is not of type {bound}"
    return f"{where}: {error.message}"[:200]


def model_params_problem(model_params: Any) -> str | None:
    """Why a checkpoint's recorded ``model_params`` cannot be built, checked against the schema's types, enums and
    ranges (cpabanim/schemas/model.yaml) BEFORE any model is: a file asking for a 16384-channel generator would
    otherwise allocate memory without bound, and an unknown motion would be a traceback. None when they fit;
    the first problem (in key order) otherwise."""
    from cpabanim.config.schema import validator

    if not isinstance(model_params, Mapping):
        return f"model_params is a {type(model_params).__name__}, not a mapping"
    errors = sorted(validator("model").iter_errors(model_params), key=lambda e: [str(p) for p in e.absolute_path])
    return _describe_model_error(errors[0]) if errors else None


def load_checkpoint(path: str | Path, map_location="cpu"):
    """-> (AnimationModel in eval mode on ``map_location``, extra dict: step, epoch, params, complete, ...).

    The model is built from the recorded ``model_params`` (checked first, :func:`read_checkpoint`); a key added
    to the schema since the file was written takes its default (``ModelConfig.from_mapping``)."""
    from cpabanim.config.typed import ModelConfig
    from cpabanim.models.full import AnimationModel

    state = read_checkpoint(path, map_location)
    model = AnimationModel(ModelConfig.from_mapping(state["model_params"]))
    load_model_state(model, state["model"], Path(path))
    model.to(map_location if not callable(map_location) else "cpu").eval()
    extra = {k: v for k, v in state.items() if k != "model"}
    return model, extra


def load_model_state(model, saved: Mapping[str, Any], path: Path) -> None:
    """``model.load_state_dict(saved)``, the tensors of checkpoint ``path``, with every mismatch one line: the first
    tensor whose shape differs from what the params give (named, both shapes: torch's error is a page), or the
    missing / unexpected names. Every loader of a checkpoint's model goes through here (load, resume, AVD)."""
    expected = model.state_dict()
    reshaped = [
        key
        for key, tensor in expected.items()
        if key in saved and hasattr(saved[key], "shape") and tuple(saved[key].shape) != tuple(tensor.shape)
    ]
    if reshaped:
        key = reshaped[0]
        raise CpabanimError(
            f"checkpoint {path} does not fit the model its params describe: {key} has shape "
            f"{list(saved[key].shape)} in the file, {list(expected[key].shape)} from the params "
            f"({len(reshaped)} tensor(s) differ); the file was altered or mixed with another run's params: "
            "move it away and train again (`cpabanim train --restart`), or restore the checkpoint that belongs here"
        )
    try:
        model.load_state_dict(saved)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CpabanimError(
            f"checkpoint {path} does not match the model it describes ({_state_mismatch(model, saved)}); "
            "it was probably written by an older cpabanim: train again"
        ) from exc


def _state_mismatch(model, state: dict[str, Any], shown: int = 3) -> str:
    """One line naming what differs between ``model``'s state and a saved one (torch's message spans lines)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = [
        f"{label} {len(names)}: {', '.join(names[:shown])}{', ...' if len(names) > shown else ''}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped))
        if names
    ]
    return "; ".join(parts) or "values that do not load"


# ---------------------------------------------------------------------------------------------------------
# the checkpoint folder: stale temporary files and the trainer's lock


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.tmp<pid>``) that a killed save left in ``folder``; returns them.

    Call it while holding :func:`hold_checkpoint_folder`: then no other process is saving into the folder,
    so every temporary file there is an orphan (a full disk would otherwise stay full of them).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in sorted(folder.iterdir()):
        if _TEMP_PATTERN.match(candidate.name) and candidate.is_file() and not candidate.is_symlink():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _lock_holder(lock_path: Path) -> str:
    """The pid the holder wrote into the lock file (``unknown`` while it has not written it yet)."""
    try:
        text = lock_path.read_text().strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@contextmanager
def hold_checkpoint_folder(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on the checkpoint ``folder`` (``folder/.cpabanim-train.lock``) for the block.

    A second holder (another trainer, e.g. one left running after ``kill -9`` of snakemake) fails at once
    with a :class:`CpabanimError` naming the holder's pid. The lock is ``fcntl.flock`` on an open file: the
    kernel releases it when the holder exits, however it exits, so a killed trainer never leaves a stale lock.
    The lock file stays (deleting it could let two processes lock two different files); .dvcignore lists it.
    Yields the lock file's path.
    """
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise CpabanimError(f"cannot create the lock file {lock_path}: {describe_os_error(exc, lock_path)}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(lock_path)
            raise CpabanimError(
                f"checkpoint folder {folder} is in use by another trainer (pid {holder}, lock {lock_path}); "
                f"wait for it to finish or stop it (kill {holder}) before training again"
            ) from None
        # the pid is for the message of a second holder only; the lock itself is the flock
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield lock_path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
