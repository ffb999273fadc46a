"""How many GPUs a stage's job asks its orchestrator for (docs/cluster.md, "GPUs").

A stage's declaration says whether its work runs on a GPU (``Stage.gpu``: False, True, or a function of the
parameters, e.g. evaluation only with a network metric); the device setting and the machine decide the rest:

- ``device: cpu`` asks for none; ``device: cuda`` for the stage's GPUs;
- ``device: auto`` on one machine asks for GPUs only where the machine has some (:func:`local_gpus`), so a
  machine without one runs every job on its cores, as many at once as ``--cores`` allows;
- under a cluster executor (``available`` None) ``auto`` asks, since the job runs on a node of the cluster, not
  on the submit host; the cluster then decides how many GPU jobs run at once.

On one machine Snakemake caps the ``gpu`` resource at :func:`local_gpus` (``workflow/rules/common.smk``), so no
two jobs share a GPU unless ``--resources gpu=N`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpabanim.config.mappings import flatten

if TYPE_CHECKING:
    from cpabanim.pipeline.base import Stage

NVIDIA_DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver sees


def local_gpus(environ: Mapping[str, str] | None = None, driver: Path = NVIDIA_DRIVER_GPUS) -> int:
    """GPUs this machine's jobs may use, without importing torch (the Snakefile calls it on every parse):
    ``CUDA_VISIBLE_DEVICES`` where set (CUDA reads its ids up to the first invalid one, such as ``-1``), else the
    NVIDIA driver's GPUs."""
    environ = os.environ if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return sum(1 for _ in driver.iterdir()) if driver.is_dir() else 0
    count = 0
    for device in visible.split(","):
        if not device.strip() or device.strip().startswith("-"):
            break
        count += 1
    return count


def stage_gpus(stage: Stage, params: Mapping[str, Any], available: int | None) -> int:
    """GPUs the work of ``stage`` uses with ``params`` whatever the device setting: 0 for a stage that never runs on
    a GPU (or, with these parameters, does not: SLIC masks, an evaluation without networks)."""
    if not stage.gpu:
        return 0
    return int(stage.gpu(params, available)) if callable(stage.gpu) else 1


def gpu_request(stage: Stage, params: Mapping[str, Any], available: int | None) -> int:
    """GPUs one job of ``stage`` asks for, with ``params`` (the experiment's resolved parameters).

    ``available``: the GPUs of this machine (:func:`local_gpus`), or None under a cluster executor."""
    device = str(flatten(params).get("device", "auto"))
    if device == "cpu" or (device == "auto" and available == 0):
        return 0
    return stage_gpus(stage, params, available)
