"""Stage ``reconstruct``: video reconstruction of every test video (source = frame 0), per experiment."""

from __future__ import annotations

from cpabanim.pipeline.base import Output, Stage, StageIO

STAGE = Stage(
    name="reconstruct",
    help="video reconstruction: source = frame 0, driving = every frame",
    module=__name__,
    params=("seed", "reconstruct"),
    settings=("device",),
    inputs=("processed", "checkpoints"),
    outputs=(Output("reconstruction", "{paths.outputs}/{experiment}/reconstruction"),),
    per_experiment=True,
    gpu=True,
)


def run(cfg, io: StageIO) -> None:
    from cpabanim.animation.reconstruct import reconstruct_all

    reconstruct_all(cfg, io.inputs["processed"], io.inputs["checkpoints"], io.outputs["reconstruction"])
