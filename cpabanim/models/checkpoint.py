"""Checkpoints: one file holds the model, optimisers, schedulers, counters, params and RNG states.

Promises (docs/reliability.md lists the test behind each):

- **Atomic**: written to a temporary file in the same folder, flushed to disk, then ``os.replace``-d over
  ``last.pt``: an interrupted or failed save leaves either the previous checkpoint or the new one, never a
  truncated file. A failed write (full disk, read-only folder) removes its temporary file and raises one
  :class:`CpabanimError` line naming the path.
- **Safe to load**: every file is read with ``torch.load(..., weights_only=True)``; a checkpoint stores only
  plain containers, numbers, strings and tensors (numpy RNG arrays are stored as tensors). A file that needs
  anything else to load (a pickle that would run code) is refused, never retried unsafely.
- **One trainer per folder**: :func:`hold_checkpoint_folder` takes an exclusive lock for as long as training runs.
- **No orphans**: :func:`remove_stale_temp_files` clears what a killed save left behind; the temporary files
  and the lock file match ``.dvcignore`` so DVC never hashes them.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pickle
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cpabanim.errors import CpabanimError

# 1: numpy RNG state pickled as a numpy array (loads with weights_only through _legacy_numpy_globals);
# 2: every numpy array / scalar stored as a tensor / Python number (plain weights_only content).
FORMAT_VERSION = 2
CHECKPOINT_NAME = "last.pt"  # the training stage's checkpoint inside {paths.checkpoints}/<experiment>

TEMP_INFIX = ".tmp"  # temporary name: ".<name>.tmp<pid>" (the pattern .dvcignore lists: .*.tmp[0-9]*)
LOCK_NAME = ".cpabanim-train.lock"  # inside the checkpoint folder, also in .dvcignore
_TEMP_PATTERN = re.compile(r"^\..+\.tmp\d+$")
_NDARRAY_TAG = "__cpabanim_ndarray__"  # marks a numpy array stored as a tensor (see _to_plain / _from_plain)


def _legacy_numpy_globals() -> list[Any]:
    """The numpy globals a format-1 checkpoint's RNG state needs: constructing a plain numeric array runs no
    code, so they are safe to allow (torch documents this allow-list for numpy arrays)."""
    from numpy._core import multiarray

    uint32_dtype = type(np.dtype(np.uint32))
    return [multiarray._reconstruct, np.ndarray, np.dtype, uint32_dtype,
            (multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]  # as numpy 1.x wrote it


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
# safe loading (checkpoints and weight files)


def _weights_only_reason(exc: BaseException) -> tuple[str | None, str]:
    """(why the file is unsafe, or None when it is merely unreadable; a one-line reason) from torch's error,
    without torch's advice to retry with the unsafe loader (never an option here)."""
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
    if detail:
        reason = detail.group(1).split(". Please use")[0].strip()
    else:
        lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
        reason = lines[0] if lines else type(exc).__name__
    global_name = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    operand = re.search(r"Unsupported operand (\S+)", text)
    if global_name:
        unsafe = (f"loading it would call {global_name.group(1)}, i.e. run code from the file; cpabanim loads only "
                  "plain tensors and containers. Do not use files of unknown origin")
    elif operand:  # random bytes land here as often as a pickle protocol torch's safe loader does not read
        unsafe = (f"it is corrupt or not a plain PyTorch file (pickle instruction {operand.group(1)}, which safe "
                  "loading does not execute)")
    else:
        unsafe = None
    return unsafe, f"{type(exc).__name__}: {reason}"[:300]


def safe_torch_load(path: str | Path, what: str, fix: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one :class:`CpabanimError` line.

    Args:
        path: the file.
        what: what the file should be, for the message ("checkpoint", "weight file vgg19 (...)").
        fix: the sentence that tells the user what to do (delete and re-download / retrain).
    A file whose pickle asks for code (any global outside torch's allow-list and the numpy arrays of
    format-1 checkpoints) is refused as unsafe: it is never loaded with the unsafe loader.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe, reason = _weights_only_reason(exc)
        if unsafe:
            raise CpabanimError(f"{what} {path} refused: {unsafe}; {fix}") from None
        raise CpabanimError(f"{what} {path} is corrupt or not a PyTorch file ({reason}); {fix}") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, AttributeError, TypeError) as exc:
        # truncated zip, random bytes, unreadable file: torch raises all of these
        _, reason = _weights_only_reason(exc)
        raise CpabanimError(f"{what} {path} is corrupt or not a PyTorch file ({reason}); {fix}") from None


# ---------------------------------------------------------------------------------------------------------
# writing


def temp_path_for(path: str | Path) -> Path:
    """The temporary file a save of ``path`` writes first: hidden, same folder (so ``os.replace`` is atomic),
    named after this process so two savers never share one, and matched by .dvcignore's ``.*.tmp[0-9]*``."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_INFIX}{os.getpid()}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a crash right after ``os.replace`` keeps the new checkpoint)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | Path, write: Callable[[Any], None],
                     verify: Callable[[Path], None] | None = None) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, ``verify(temporary path)`` (when
    given) and rename it over ``path``.

    A failure (disk full, read-only folder, quota, an exception in ``write`` or ``verify``) removes the
    temporary file and leaves ``path`` as it was; OS errors become one :class:`CpabanimError` line naming ``path``.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException as exc:  # KeyboardInterrupt included: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        error = _os_error_of(exc)
        if error is not None:
            raise CpabanimError(f"cannot write {path}: {_describe_os_error(error, path)}; "
                                "the previous file (if any) is unchanged") from exc
        raise
    _fsync_folder(path.parent)
    return path


def _os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (torch wraps write failures of its zip writer in RuntimeError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, RuntimeError) and "write" in str(exc).lower():
        return OSError(errno.EIO, str(exc).splitlines()[0])
    return None


def _describe_os_error(error: OSError, path: Path) -> str:
    """A short cause and fix for the usual write failures."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device of {path.parent} (free some space and run again)"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{path.parent} is not writable ({error.strerror or error}); make it writable or change paths.*"
    if error.errno == errno.EFBIG:
        return "the file exceeds the size allowed for this process (ulimit -f) or file system"
    return error.strerror or str(error)


def save_checkpoint(path: str | Path, model, optimizers: dict[str, Any] | None = None,
                    schedulers: dict[str, Any] | None = None, step: int = 0, epoch: int = 0,
                    params: dict[str, Any] | None = None, rng_state: dict[str, Any] | None = None,
                    complete: bool = False, extra: dict[str, Any] | None = None) -> Path:
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
    return write_atomically(path, lambda handle: torch.save(_to_plain(state), handle),
                            lambda tmp: _check_loadable(tmp, path))


def _check_loadable(written: Path, path: Path) -> None:
    """Refuse to publish a checkpoint that :func:`read_checkpoint` would refuse (an object that is not a plain
    container or tensor slipped into params / extra): better a clear error now than an unloadable file later."""
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(written)
    if unsafe:
        raise CpabanimError(f"checkpoint {path} would need {', '.join(sorted(unsafe))} to load; only plain "
                            "containers, numbers, strings and tensors may be stored (convert them before saving)")


# ---------------------------------------------------------------------------------------------------------
# reading


def read_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """The checkpoint dict (numpy RNG arrays restored); a missing, corrupt or unsafe file raises
    :class:`CpabanimError`. Reads format 1 (numpy arrays pickled) and format 2 alike."""
    path = Path(path)
    if not path.is_file():
        raise CpabanimError(f"checkpoint {path} not found (train first: `cpabanim train`)")
    state = safe_torch_load(path, "checkpoint", "delete it and train again (`cpabanim train`)", map_location)
    if not isinstance(state, dict) or "model" not in state or "model_params" not in state:
        raise CpabanimError(f"checkpoint {path} is not a cpabanim checkpoint (no model state)")
    return _from_plain(state)


def load_checkpoint(path: str | Path, map_location="cpu"):
    """-> (AnimationModel in eval mode on ``map_location``, extra dict: step, epoch, params, complete, ...)."""
    from cpabanim.models.full import AnimationModel

    state = read_checkpoint(path, map_location)
    model = AnimationModel(state["model_params"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CpabanimError(f"checkpoint {path} does not match the model it describes ({_state_mismatch(model, state['model'])}); "
                            "it was probably written by an older cpabanim: train again") from exc
    model.to(map_location if not callable(map_location) else "cpu").eval()
    extra = {k: v for k, v in state.items() if k != "model"}
    return model, extra


def _state_mismatch(model, state: dict[str, Any], shown: int = 3) -> str:
    """One line naming what differs between ``model``'s state and a saved one (torch's message spans lines)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = [f"{label} {len(names)}: {', '.join(names[:shown])}{', ...' if len(names) > shown else ''}"
             for label, names in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped)) if names]
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
        raise CpabanimError(f"cannot create the lock file {lock_path}: {_describe_os_error(exc, lock_path)}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(lock_path)
            raise CpabanimError(
                f"checkpoint folder {folder} is in use by another trainer (pid {holder}, lock {lock_path}); "
                f"wait for it to finish or stop it (kill {holder}) before training again") from None
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
