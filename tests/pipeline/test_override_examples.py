"""Every ``snakemake ... --config ...`` example of the Snakefile, the README and docs/ works as written.

Each example's ``--config`` values are handed to ``snakemake -n`` in a copy of the project: the dry run must plan
the pipeline, and the command-line layer it hands the jobs must hold the values. The one form Snakemake itself
refuses (a dotted key, ``--config train.max_steps=50``) is documented as refused, and is checked to be refused.
"""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from cpabanim.config.overrides import split_assignments

from ..conftest import PROJECT_ROOT
from .conftest import BIN, copy_project, run

DOCS = sorted(str(p.relative_to(PROJECT_ROOT)) for p in (PROJECT_ROOT / "docs").glob("*.md"))
DOCUMENTED = ["workflow/Snakefile", "README.md", *DOCS]
EXAMPLE = re.compile(r"snakemake [^\n`]*?--config((?: +(?!--|#|\\)[^\s`#\\]+)+)")


def config_examples() -> list[tuple[str, tuple[str, ...]]]:
    """(file, the --config values) of every example, once per distinct set of values."""
    found: dict[tuple[str, ...], str] = {}
    for name in DOCUMENTED:
        for match in EXAMPLE.finditer((PROJECT_ROOT / name).read_text()):
            found.setdefault(tuple(shlex.split(match.group(1))), name)
    return [(name, values) for values, name in found.items()]


EXAMPLES = config_examples()


def test_the_documentation_has_examples_of_each_form():
    forms = {value.split("=", 1)[0] for _, values in EXAMPLES for value in values}
    assert {"experiments", "preset", "set", "train"} <= forms, forms


@pytest.fixture(scope="module")
def examples_project(tmp_path_factory):
    """One copy of the project for every example: a dry run writes no output, only the command-line layer
    (``.snakemake/cpabanim/overrides.yaml``) that each example reads after its own run."""
    return copy_project(tmp_path_factory.mktemp("examples") / "project")


@pytest.mark.parametrize("source,values", EXAMPLES, ids=[" ".join(v) for _, v in EXAMPLES])
def test_a_documented_config_example_runs(examples_project, source, values):
    project = examples_project
    dotted = [v for v in values if "." in v.split("=", 1)[0]]
    out = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--config", *values], project, check=not dotted)
    if dotted:  # documented as refused by Snakemake's own --config parser, before the Snakefile is read
        assert out.returncode != 0 and "valid identifier" in out.stdout + out.stderr, source
        assert "refused by Snakemake" in (PROJECT_ROOT / source).read_text(), f"{source} must say it is refused"
        return
    assert "train" in out.stdout, f"{source}: {values} planned no training:\n{out.stdout[-2000:]}"
    handed = yaml.safe_load((project / ".snakemake" / "cpabanim" / "overrides.yaml").read_text()) or {}
    for value in values:  # each parameter value reached the jobs' command-line layer (experiments are not one)
        key = value.split("=", 1)[0]
        if key == "set":
            assert {a.split("=", 1)[0].split(".")[0] for a in split_assignments(value.split("=", 1)[1])} <= set(handed)
        elif key != "experiments":
            assert key in handed, f"{source}: {value} did not reach the jobs ({handed})"
