# cpabanim pipeline (Snakemake). The same stages, commands, deps, params and outs are declared in dvc.yaml;
# tests/pipeline/test_dag_consistency.py keeps the two in sync. Every rule is a thin wrapper around
# `cpabanim <stage>`; params.yaml is the only source of parameters.
#
#   snakemake --cores all                                   # the embedded default (synthetic, CPU, minutes)
#   snakemake --cores all --configfile presets/vox-256.yaml # a paper experiment (or --config preset=vox-256)
#   snakemake --report report.html                          # evaluation figures and tables
#
# workflow/profiles/default/config.yaml is applied automatically (one GPU job at a time, --rerun-incomplete).

configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/animate.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


rule all:
    default_target: True
    input:
        METRICS,
        REPORT_OUTS,
