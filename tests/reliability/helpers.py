"""Hostile files the reliability tests write (a pickle that would run code, a legacy (format-1) checkpoint) and
the check that a refusal never advises the unsafe loader."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

from tests.conftest import PROJECT_ROOT


class CreatesMarkerFile:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff the loader ran code from the pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def write_malicious_checkpoint(path: Path, marker: Path, zip_format: bool = True, protocol: int = 2) -> Path:
    """A file shaped like a cpabanim checkpoint whose ``model`` entry runs code when unpickled (torch's zip
    format, or a bare pickle of ``protocol``, which torch.load also reads)."""
    state = {"format": 2, "model_params": {}, "model": CreatesMarkerFile(marker), "step": 1}
    path.parent.mkdir(parents=True, exist_ok=True)
    if zip_format:
        torch.save(state, path)
    else:  # the pre-1.6 plain pickle torch.load also reads
        with open(path, "wb") as handle:
            pickle.dump(state, handle, protocol=protocol)
    assert not marker.exists()
    return path


def legacy_rng_state() -> dict:
    """The trainer's RNG state as format 1 stored it: numpy's state is a tuple holding a uint32 array."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def assert_no_unsafe_advice(message: str) -> None:
    """One line, and no mention of ``weights_only`` at all: torch's advice to retry unsafely is never given
    (docs/reliability.md); the refusal says :data:`~cpabanim.weights.UNSAFE_ADVICE` instead."""
    assert "\n" not in message
    assert "weights_only" not in message, message
    assert "Please" not in message and "re-running" not in message, message


def python_child(code: str, **kwargs) -> subprocess.Popen:
    """A child Python process running ``code`` from the project root (imports the package under test), its pipes
    open: what the lock and guard tests hold while they try a second process."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )
