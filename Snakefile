# cpabanim pipeline (Snakemake). The rules in workflow/rules/<stage>.smk are generated from the stage declarations
# (cpabanim/pipeline/) by `cpabanim dag --write`, as is dvc.yaml; a test fails when they are out of date.
#
#   snakemake --cores all                                      # the embedded default (synthetic, CPU, minutes)
#   snakemake --cores all --config experiments='[cpab,tps]'    # experiments side by side (experiments/*.yaml)
#   snakemake --cores all --config preset=vox-256              # a paper experiment (preset below params.yaml)
#   snakemake --cores all --config train.max_steps=50          # any parameter (top layer)
#   snakemake --report report.html                             # comparison figures and tables
#
# workflow/profiles/default/config.yaml is applied automatically (one GPU job at a time, --rerun-incomplete).


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
        rules.report.output,
        persistent_markers(),
