rule animate:
    """Cross-identity animation of a deterministic list of test pairs (standard, relative, avd modes)."""
    input:
        processed=PATHS["processed"],
        model=TRAIN_DONE,
    output:
        animation=directory(f"{PATHS['outputs']}/animation"),
    params:
        **section("seed", "device", "preset", "animate"),
        params_file=PARAMS_FILE,
    resources:
        gpu=1,
    shell:
        "cpabanim animate --params {params.params_file}"
