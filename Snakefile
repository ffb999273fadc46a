# cpabanim pipeline (Snakemake). The same stages are described in dvc.yaml; tests keep the two in sync.
# Stages are wired in as their issues land.
configfile: "params.yaml"

rule all:
    input: []
