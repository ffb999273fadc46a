"""The trained model as an MLflow PyTorch model: one tensor in, one tensor out, with a signature.

MLflow's PyTorch flavour serves a module that takes a single float tensor and returns a single tensor
(``mlflow.pytorch.log_model``). :class:`ReconstructionModule` adapts :class:`cpabanim.models.full.AnimationModel`
to that: the input is source and driving frames stacked on the channel axis, ``(B, 6, H, W)`` in [0, 1], the
output the predicted driving frame ``(B, 3, H, W)`` in [0, 1] (the reconstruction of docs/evaluation.md).

The model is exported with ``torch.export`` (MLflow's ``pt2`` format: a traced graph, loading runs no pickled
code) when the motion model traces; otherwise it falls back to MLflow's pickle format and says so in a tag.
Each experiment's model is named ``cpabanim-<experiment>`` (:func:`model_name`), as a logged model and as a
registered model whose versions are its checkpoints, described with the experiment's recorded parameters and
metrics (:func:`register_model`). Load it with ``mlflow.pytorch.load_model("models:/cpabanim-tps/latest")``, the
``models:/<model id>`` URI the report logs, or ``runs:/<parent run>/cpabanim-tps``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cpabanim.errors import first_line

log = logging.getLogger(__name__)

MODEL_PREFIX = "cpabanim-"  # the logged and registered model of experiment tps: cpabanim-tps
CHECKSUM_TAG = "cpabanim.checkpoint_sha256"  # which checkpoint a logged model is (logged once per checkpoint)
DESCRIPTION_LIMIT = 5000  # characters of a registered model's (or version's) description MLflow's stores keep
EXAMPLE_BATCH = 2  # > 1, so that MLflow's exporter keeps the batch dimension dynamic


class ReconstructionModule(nn.Module):
    """``(B, 6, H, W)`` = source (channels 0-2) and driving (3-5) frames -> the predicted driving frame."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        source, driving = frames[:, :3], frames[:, 3:]
        return self.model(source, driving, use_bg=True)["prediction"]


def model_name(experiment: str) -> str:
    """The name of ``experiment``'s logged model and registered model: ``cpabanim-<experiment>``."""
    return f"{MODEL_PREFIX}{experiment}"


def example_input(model_params: dict[str, Any], frame_size: int, batch: int = EXAMPLE_BATCH) -> np.ndarray:
    """A deterministic float32 input of the module's shape (the signature's and the exporter's example)."""
    channels = int(model_params["num_channels"])
    generator = np.random.default_rng(0)
    return generator.random((batch, 2 * channels, frame_size, frame_size), dtype=np.float32)


def checkpoint_params(extra: dict[str, Any]) -> dict[str, str]:
    """What defines the logged model: the checkpoint's model section (flattened) and its training counters."""
    from cpabanim.config.mappings import flatten

    values = {f"model.{k}": v for k, v in flatten(extra["model_params"]).items()}
    values.update({f"checkpoint.{k}": extra[k] for k in ("step", "epoch") if k in extra})
    return {k: str(v) for k, v in values.items()}


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """torch.export prints the whole partial graph to stderr (hundreds of lines) and logs guard warnings when
    it gives up; the fallback's one warning says why instead."""
    names = ("torch.fx.experimental.symbolic_shapes", "torch._dynamo", "torch.export")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def checkpoint_checksum(path: Path) -> str:
    """SHA-256 of a checkpoint file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log_checkpoint_model(checkpoint: Path, run_id: str, frame_size: int, name: str):
    """Log the checkpoint's model as an MLflow PyTorch model ``name`` on run ``run_id``; returns its
    ``mlflow.models.model.ModelInfo`` (``model_uri``, ``model_id``).

    ``pt2`` (torch.export) first; a model that does not export is logged with MLflow's pickle format instead,
    tagged ``serialization=pickle``. CPAB models go straight to pickle: their unrolled keypoint fit makes a
    graph that took over 5 minutes to export at 64 px on one CPU core, and the fit's float32 autocast regions
    then fail the exported program's verifier when it is loaded (measured with torch 2.14).
    """
    import mlflow
    from mlflow.models import infer_signature

    from cpabanim.models.checkpoint import load_checkpoint

    model, extra = load_checkpoint(checkpoint, map_location="cpu")
    module = ReconstructionModule(model)
    example = example_input(extra["model_params"], frame_size)
    with torch.no_grad():
        output = module(torch.from_numpy(example)).numpy()
    signature = infer_signature(example, output)
    torch_requirement = f"torch=={torch.__version__.split('+')[0]}"
    common = {
        "name": name,
        "signature": signature,
        "input_example": example,
        "params": checkpoint_params(extra),
        "run_id": run_id,
    }
    tags = {CHECKSUM_TAG: checkpoint_checksum(checkpoint), "cpabanim.checkpoint": str(checkpoint)}
    if extra["model_params"].get("motion") != "cpab":  # CPAB: pickle by choice (see above)
        try:
            with _quiet_export():
                return mlflow.pytorch.log_model(
                    module,
                    serialization_format="pt2",
                    pip_requirements=[torch_requirement],
                    tags={**tags, "serialization": "pt2"},
                    **common,
                )
        except Exception as err:  # noqa: BLE001 - torch.export fails in many ways; pickle always works
            log.warning(
                "torch.export of %s failed (%s: %s); logging it with MLflow's pickle format",
                checkpoint,
                type(err).__name__,
                first_line(err),
            )
            _delete_failed_models(run_id, name, tags[CHECKSUM_TAG])
    # unpickling needs the model's classes: the cpabanim package must be importable where it is loaded
    return mlflow.pytorch.log_model(
        module,
        serialization_format="pickle",
        tags={**tags, "serialization": "pickle"},
        pip_requirements=[torch_requirement, f"cpabanim=={_version()}"],
        **common,
    )


def register_model(info, experiment: str, description: str, version_description: str):
    """Register the logged model ``info`` as the newest version of ``experiment``'s registered model
    (:func:`model_name`, created with its first version), both described; returns the model version."""
    import mlflow

    name = model_name(experiment)
    version = mlflow.register_model(info.model_uri, name, tags={"cpabanim.experiment": experiment})
    client = mlflow.MlflowClient()
    client.update_registered_model(name, description=description[:DESCRIPTION_LIMIT])
    client.set_registered_model_tag(name, "cpabanim.experiment", experiment)
    return client.update_model_version(name, version.version, description=version_description[:DESCRIPTION_LIMIT])


def _delete_failed_models(run_id: str, name: str, checksum: str) -> None:
    """MLflow registers the model before exporting it: a failed export leaves a FAILED model on the run, which
    the UI would list beside the real one. Delete this checkpoint's FAILED models of ``run_id``."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}' AND name = '{name}'"
    )
    for model in models:
        if model.status == LoggedModelStatus.FAILED and model.tags.get(CHECKSUM_TAG) == checksum:
            client.delete_logged_model(model.model_id)


def _version() -> str:
    from importlib.metadata import version

    return version("cpabanim")
