"""A user's mistake in the parameters is one line, before any work, naming where it was made (issue 24).

- A YAML alias bomb ("billion laughs") in params.yaml, even under a list-valued key that the schema accepts, is
  refused while parsing: its expanded size is measured without expanding it (cpabanim/config/mappings.py).
- Snakemake's ``--config`` mistakes (a value the schema refuses, malformed YAML, an experiment name that leaves its
  folder) are the CLI's one line, with no Snakemake traceback around it, and exit 1.
- A refused value names the layer that set it; for params.yaml, where ``dvc exp run -S`` writes, how to undo it.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from ..pipeline.conftest import BIN, copy_project, run

BOMB = "".join(
    [
        "a: &a [x, x, x, x, x, x, x, x, x]\n",
        *(f"{n}: &{n} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, n in zip("abcdefgh", "bcdefghi")),
    ]
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("config-errors") / "project")


def cpabanim(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run([str(BIN / "cpabanim"), *args], root, check=False, timeout=120)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Using workflow")]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    "content",
    [BOMB + "train:\n  betas: *i\n", BOMB + "experiment: *i\n", "train:\n  betas: &b [0.5, *b]\n"],
    ids=["under-a-list-key", "under-a-top-key", "self-reference"],
)
def test_an_alias_bomb_in_params_yaml_is_refused_while_parsing(project: Path, tmp_path: Path, content: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(content)
    started = time.monotonic()
    result = cpabanim(project, "params", "--params", str(params))
    line = one_line(result)
    assert time.monotonic() - started < 60
    assert f"parameter file {params} refused:" in line, line
    assert "alias" in line, line


def test_an_alias_that_repeats_a_section_is_still_read(project: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train: {max_steps: &n 7, checkpoint_every: *n}\n")  # an alias as people use them
    result = cpabanim(project, "params", "--params", str(params))
    assert result.returncode == 0, result.stderr
    assert re.search(r"train\.max_steps +7 ", result.stdout) and re.search(
        r"train\.checkpoint_every +7 ", result.stdout
    )


@pytest.mark.parametrize(
    ("config", "says"),
    [
        (
            "set=[train.max_steps=abc]",
            "train.max_steps: 'abc' is not of type 'integer' (train.max_steps from the command line)",
        ),
        ("model={motion: tpz", "--config model=...: value '{motion: tpz' is not valid YAML"),
        ("experiments=[../../x]", "experiment name '../../x' is not a plain name"),
    ],
    ids=["schema", "malformed-yaml", "escaping-name"],
)
def test_a_snakemake_config_mistake_is_the_clis_one_line(project: Path, config: str, says: str) -> None:
    result = run([str(BIN / "snakemake"), "-n", "--cores", "1", "--config", config], project, check=False)
    line = one_line(result)
    assert line.startswith("cpabanim: error: ") and says in line, line
    assert not (project / "data").exists()


def test_a_refused_value_in_params_yaml_says_how_to_undo_a_dvc_exp_value(project: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  max_steps: abc\n")  # what `dvc exp run -S train.max_steps=abc` leaves behind
    line = one_line(cpabanim(project, "params", "--params", str(params)))
    assert "train.max_steps from params.yaml" in line and "git checkout params.yaml" in line, line
