rule evaluate:
    """Metrics of the reconstructions and animations: outputs/metrics.json and a per-video table."""
    input:
        processed=PATHS["processed"],
        reconstruction=f"{PATHS['outputs']}/reconstruction",
        animation=f"{PATHS['outputs']}/animation",
    output:
        metrics=METRICS,
        table=METRICS_TABLE,
        unavailable=f"{PATHS['outputs']}/metrics_unavailable.json",
    params:
        **section("seed", "device", "preset", "evaluate"),
        params_file=PARAMS_FILE,
    resources:
        gpu=1,
    shell:
        "cpabanim evaluate --params {params.params_file}"
