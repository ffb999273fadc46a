"""The one place that turns the ``device`` parameter into a torch device (and says clearly when it cannot)."""

from __future__ import annotations

import os

from cpabanim.errors import ConfigError


def resolve_device(choice: str = "auto", local_rank: int | None = None):
    """``auto`` -> CUDA when available, else CPU; ``cuda`` -> this process's GPU (``LOCAL_RANK`` under torchrun),
    or a clear error when there is none; ``cpu`` -> CPU. Returns a ``torch.device``."""
    import torch

    if choice not in ("auto", "cpu", "cuda") and not str(choice).startswith("cuda:"):
        raise ConfigError(f"device {choice!r}: use auto, cpu or cuda")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device: {choice} was asked for but no CUDA device is available (use device: auto or cpu)")
    if str(choice).startswith("cuda:"):
        return torch.device(choice)
    rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    return torch.device("cuda", rank)
