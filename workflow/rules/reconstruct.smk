rule reconstruct:
    """Video reconstruction of every test video (source = frame 0): lossless PNG frames, MP4 and GIF."""
    input:
        processed=PATHS["processed"],
        model=TRAIN_DONE,
    output:
        reconstruction=directory(f"{PATHS['outputs']}/reconstruction"),
    params:
        **section("seed", "device", "preset", "reconstruct"),
        params_file=PARAMS_FILE,
    resources:
        gpu=1,
    shell:
        "cpabanim reconstruct --params {params.params_file}"
