rule train:
    """Train the animation model. Resumes from {paths.checkpoints}/last.pt when a previous run was cut off."""
    input:
        processed=PATHS["processed"],
        masks=PATHS["masks"],
    output:
        # a marker, not the checkpoints: Snakemake deletes outputs before re-running a rule (see common.smk)
        done=touch(TRAIN_DONE),
    params:
        **section("seed", "device", "preset", "data", "model", "loss", "train"),
        params_file=PARAMS_FILE,
        checkpoints=PATHS["checkpoints"],
    resources:
        gpu=1,
    shell:
        "cpabanim train --params {params.params_file}"
