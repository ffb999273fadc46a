rule masks:
    """Region-label maps of the training frames (SAM, or SLIC superpixels offline) for the semantic loss."""
    input:
        processed=PATHS["processed"],
    output:
        masks=directory(PATHS["masks"]),
    params:
        **section("seed", "device", "preset", "masks"),
        params_file=PARAMS_FILE,
    resources:
        gpu=1,
    shell:
        "cpabanim masks --params {params.params_file}"
