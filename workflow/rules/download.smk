rule download:
    """Fetch (or, for the synthetic default, generate) the raw videos of data.source."""
    output:
        raw=directory(PATHS["raw"]),
    params:
        **section("seed", "preset", "data"),
        params_file=PARAMS_FILE,
    shell:
        "cpabanim download --params {params.params_file}"
