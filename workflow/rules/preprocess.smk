rule preprocess:
    """Raw videos -> square lossless train/test frame folders and manifest.json."""
    input:
        raw=PATHS["raw"],
    output:
        processed=directory(PATHS["processed"]),
    params:
        **section("seed", "preset", "data"),
        params_file=PARAMS_FILE,
    shell:
        "cpabanim preprocess --params {params.params_file}"
