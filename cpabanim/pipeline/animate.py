"""Stage ``animate``: cross-identity animation of a deterministic list of test pairs, per experiment, with the avd
stage's model (the trained model with its AVD network trained: the ``avd`` mode needs it)."""

from __future__ import annotations

from cpabanim.pipeline.base import Output, Stage, StageIO

STAGE = Stage(
    name="animate",
    help="cross-identity animation on a deterministic list of test pairs",
    module=__name__,
    params=("seed", "data.seed", "animate"),
    settings=("device",),
    inputs=("processed", "avd_checkpoints"),
    outputs=(Output("animation", "{paths.outputs}/{experiment}/seed{seed}/animation"),),
    per_experiment=True,
    gpu=True,
)


def run(cfg, io: StageIO) -> None:
    from cpabanim.animation.pairs import animate_pairs

    a = cfg.animate
    animate_pairs(
        processed=io.inputs["processed"],
        checkpoints=io.inputs["avd_checkpoints"],
        out_root=io.outputs["animation"],
        animator=a.animator,
        checkpoint=a.checkpoint,
        num_pairs=a.num_pairs,
        modes=list(a.modes),
        max_frames=a.max_frames,
        fps=a.fps,
        mp4=a.mp4,
        gif=a.gif,
        device=cfg.device,
        seed=cfg.seed,
        pairs_seed=cfg.data.seed,
    )
