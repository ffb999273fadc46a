"""Stage ``animate``: cross-identity animation of a deterministic list of test pairs, per experiment."""

from __future__ import annotations

from cpabanim.pipeline.base import Output, Stage, StageIO

STAGE = Stage(
    name="animate",
    help="cross-identity animation on a deterministic list of test pairs",
    module=__name__,
    params=("seed", "animate"),
    settings=("device",),
    inputs=("processed", "checkpoints"),
    outputs=(Output("animation", "{paths.outputs}/{experiment}/animation"),),
    per_experiment=True,
    gpu=True,
)


def run(cfg, io: StageIO) -> None:
    from cpabanim.animation.pairs import animate_pairs

    animate_pairs(cfg, io.inputs["processed"], io.inputs["checkpoints"], io.outputs["animation"])
