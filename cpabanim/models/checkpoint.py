"""Checkpoints: one file holds the model, optimisers, schedulers, counters, params and RNG states.

Written atomically (temporary file in the same folder + ``os.replace``) so an interrupted run never leaves a
truncated ``last.pt``: either the previous checkpoint or the new one is on disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cpabanim.errors import CpabanimError

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, model, optimizers: dict[str, Any] | None = None,
                    schedulers: dict[str, Any] | None = None, step: int = 0, epoch: int = 0,
                    params: dict[str, Any] | None = None, rng_state: dict[str, Any] | None = None,
                    complete: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint to ``path`` atomically and return the path (``extra``: more top-level entries)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """The raw checkpoint dict; a missing or unreadable file raises :class:`CpabanimError`."""
    path = Path(path)
    if not path.is_file():
        raise CpabanimError(f"checkpoint {path} not found (train first: `cpabanim train`)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated / not a torch file
        raise CpabanimError(f"checkpoint {path} is corrupt or not a cpabanim checkpoint ({exc.__class__.__name__}: "
                            f"{exc}); delete it and train again") from exc
    if not isinstance(state, dict) or "model" not in state or "model_params" not in state:
        raise CpabanimError(f"checkpoint {path} is not a cpabanim checkpoint (no model state)")
    return state


def load_checkpoint(path: str | Path, map_location="cpu"):
    """-> (AnimationModel in eval mode on ``map_location``, extra dict: step, epoch, params, complete, ...)."""
    from cpabanim.models.full import AnimationModel

    state = read_checkpoint(path, map_location)
    model = AnimationModel(state["model_params"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CpabanimError(f"checkpoint {path} does not match the model it describes: {exc}") from exc
    model.to(map_location if not callable(map_location) else "cpu").eval()
    extra = {k: v for k, v in state.items() if k != "model"}
    return model, extra
