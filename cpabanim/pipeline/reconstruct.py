"""Stage ``reconstruct``: video reconstruction of every test video (source = frame 0), per experiment; sharded
(``reconstruct.shards`` jobs per run and a gather: docs/pipeline.md, "Sharded stages")."""

from __future__ import annotations

from cpabanim.pipeline.base import Output, Stage, StageIO

RUN = "{paths.outputs}/{experiment}/seed{seed}"  # one (experiment, seed) run's outputs

STAGE = Stage(
    name="reconstruct",
    help="video reconstruction: source = frame 0, driving = every frame",
    module=__name__,
    params=("seed", "reconstruct"),
    settings=("device",),
    # the model after the AVD stage, as TPSMM reconstructs with: its keypoint detector ran in train mode there, so
    # its BatchNorm statistics moved (docs/model.md, "AVD stage"); reading train's model would change the metrics
    inputs=("processed", "avd_checkpoints"),
    outputs=(
        Output("reconstruct_shards", f"{RUN}/shards/reconstruct", holds_shards=True),
        Output("reconstruction", f"{RUN}/reconstruction"),
    ),
    per_experiment=True,
    gpu=True,
    shards="reconstruct.shards",
)


def run(cfg, io: StageIO, shard: int | None = None, gather: bool = False) -> None:
    from cpabanim.animation.reconstruct_gather import gather_reconstruction
    from cpabanim.animation.reconstruct_records import ReconstructJob
    from cpabanim.pipeline.code import code_digest

    r, shards = cfg.reconstruct, io.outputs["reconstruct_shards"]
    job = ReconstructJob(
        processed=io.inputs["processed"],
        checkpoints=io.inputs["avd_checkpoints"],
        shards_root=shards,
        settings=r.to_dict(),
        seed=cfg.seed,
        code=code_digest(STAGE.module),
        command=f"reconstruct --experiment {cfg.experiment} --set seed={cfg.seed}",
    )
    if gather:
        gather_reconstruction(job, io.outputs["reconstruction"])
        return
    from cpabanim.animation.reconstruct import reconstruct_shard  # torch: the shard jobs only, not the gather

    for k in range(job.count) if shard is None else [shard]:
        reconstruct_shard(job, k, device=cfg.device)
    if shard is None:  # by hand: every shard, then the gather, in one process
        gather_reconstruction(job, io.outputs["reconstruction"])
