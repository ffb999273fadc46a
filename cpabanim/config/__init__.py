"""Parameters: five layers resolved into one validated dict, the stage's frozen view, and typed sections.

mappings   YAML as every tool reads it; merging and dotted keys
schema     the params schema (cpabanim/schemas/): types, ranges and the one home of every default; validation
layers     defaults < preset < params.yaml < experiment < command line -> one validated plain dict
overrides  the command-line layer as users type it (``--set``, Snakemake ``--config``)
section    the frozen view a stage runs with (its declared keys only)
typed      one frozen dataclass per params section, for the library code
paths      where an experiment's checkpoints, outputs and report live
"""
