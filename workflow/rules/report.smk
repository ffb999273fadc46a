rule report:
    """Log the metrics and artifacts to the pipeline's MLflow run; write the comparison table of runs."""
    input:
        metrics=METRICS,
        table=METRICS_TABLE,
        reconstruction=f"{PATHS['outputs']}/reconstruction",
        animation=f"{PATHS['outputs']}/animation",
        model=TRAIN_DONE,
    output:
        runs_md=f"{REPORT_DIR}/runs.md",
        runs_csv=report(f"{REPORT_DIR}/runs.csv", caption="../report/runs.rst", category="Evaluation"),
        figure=report(f"{REPORT_DIR}/metrics.png", caption="../report/metrics.rst", category="Evaluation"),
        samples=report(f"{REPORT_DIR}/samples.png", caption="../report/samples.rst", category="Evaluation"),
        train_loss=report(f"{REPORT_DIR}/train_loss.csv", caption="../report/train_loss.rst", category="Training"),
    params:
        **section("preset", "tracking"),
        params_file=PARAMS_FILE,
    shell:
        "cpabanim report --params {params.params_file}"
