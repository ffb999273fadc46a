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
    outputs=(Output("reconstruction", "{paths.outputs}/{experiment}/seed{seed}/reconstruction"),),
    per_experiment=True,
    gpu=True,
)


def run(cfg, io: StageIO) -> None:
    from cpabanim.animation.reconstruct import reconstruct_all

    r = cfg.reconstruct
    reconstruct_all(
        processed=io.inputs["processed"],
        checkpoints=io.inputs["checkpoints"],
        out_root=io.outputs["reconstruction"],
        animator=r.animator,
        checkpoint=r.checkpoint,
        max_videos=r.max_videos,
        max_frames=r.max_frames,
        batch_size=r.batch_size,
        fps=r.fps,
        mp4=r.mp4,
        gif=r.gif,
        viewing_videos=r.viewing_videos,
        device=cfg.device,
        seed=cfg.seed,
    )
