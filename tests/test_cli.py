"""The command line's conventions: --version, a fast --help that describes every stage, one error form
(``<prog>: error: <message>``, one line, exit 2 for usage and 1 for user errors) with "did you mean", the
parameter-layer options only where they are read, and progress bars that write lines into logs."""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import os
import subprocess
import sys

import pytest

import cpabanim
from cpabanim.cli import COMMANDS, CliParser, main, stage_parser
from cpabanim.pipeline import STAGE_MODULES, all_stages
from cpabanim.progress import progress_bar

from .conftest import PROJECT_ROOT


def cli_error(caplog) -> tuple[str, str]:
    """(prog, message) of the one error the CLI printed; it is one line."""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "\n" not in message, message
    return getattr(errors[0], "cli_prog", None), message


def run_cli(*args: str, cwd=PROJECT_ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "cpabanim", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def test_version_is_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"cpabanim {cpabanim.__version__}"
    assert cpabanim.__version__ == importlib.metadata.version("cpabanim")


def test_help_describes_every_stage_and_does_not_import_torch():
    code = (
        "import sys; from cpabanim.cli import build_parser; text = build_parser().format_help(); "
        "print(text); print('torch' in sys.modules, 'numpy' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "300"}
    ).stdout
    *lines, loaded = out.strip().splitlines()
    assert loaded == "False False", "cpabanim --help must stay light (no torch, no numpy)"
    text = "\n".join(lines)
    for name, stage in all_stages().items():
        assert any(line.split() and line.split()[0] == name and stage.help in line for line in lines), name
    assert "pipeline stage" not in text.replace("pipeline stages", "")
    for name, (_, help_text) in COMMANDS.items():
        assert help_text in text


def test_a_user_error_is_one_argparse_line_with_exit_1(tmp_path):
    (tmp_path / "params.yaml").write_text("")
    out = run_cli("params", "--params", str(tmp_path / "params.yaml"), "--set", "train.lr_generatr=1")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (
        "cpabanim params: error: invalid parameters: train.lr_generatr: no such parameter "
        "(did you mean 'train.lr_generator'?)\n"
    )


def test_usage_errors_are_one_line_with_exit_2_and_a_suggestion():
    out = run_cli("trian")
    assert out.returncode == 2
    assert out.stderr.startswith("cpabanim: error: argument <stage>: invalid choice: 'trian' (did you mean 'train'?)")
    assert out.stderr.count("\n") == 1
    out = run_cli("train", "--paramz", "x.yaml")
    assert out.returncode == 2
    assert out.stderr == (
        "cpabanim train: error: unrecognized arguments: --paramz x.yaml (did you mean '--params'?); "
        "see 'cpabanim train --help'\n"
    )


def test_errors_in_process_name_the_stage_and_keep_one_line(tmp_path, caplog):
    (tmp_path / "params.yaml").write_text("train: {lr_generatr: 1, batch_size: 0}\n")
    assert main(["train", "--params", str(tmp_path / "params.yaml")]) == 1
    prog, message = cli_error(caplog)
    assert prog == "cpabanim train"
    assert "train.lr_generatr: no such parameter (did you mean 'train.lr_generator'?)" in message
    assert "train.batch_size: 0 is less than the minimum of 1" in message
    caplog.clear()
    assert main(["demo", "--crop", "fase", "--source", "a.jpg", "--driving", "b.mp4"]) == 2
    prog, message = cli_error(caplog)
    assert prog == "cpabanim demo" and "invalid choice: 'fase' (did you mean 'face'?)" in message
    caplog.clear()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "tps.yaml").write_text("model: {motion: tps}\n")
    assert main(["train", "--params", str(tmp_path / "params.yaml"), "--experiment", "tsp"]) == 1
    assert cli_error(caplog)[1].endswith("(available: tps) (did you mean 'tps'?)")


def test_the_formatter_prints_the_argparse_form():
    from cpabanim import cli

    record = logging.LogRecord("cpabanim", logging.ERROR, __file__, 1, "%s", ("bad thing",), None)
    record.cli_prog = "cpabanim train"
    assert cli._CliFormatter("%(levelname)s %(message)s").format(record) == "cpabanim train: error: bad thing"


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


LAYERS = {"--params", "--preset", "--experiment", "--set", "--overrides"}


def test_layer_options_only_where_they_are_read():
    for name in STAGE_MODULES:
        assert LAYERS <= option_strings(stage_parser(name)), name
    expected = {
        "params": LAYERS,
        "demo": LAYERS - {"--overrides"},  # the experiment picks the checkpoint
        "weights": LAYERS - {"--overrides"},  # `auto` reads the losses an overlay may change
        "import-checkpoint": {"--params", "--preset", "--set"},  # the preset gives the model section
        "ui": {"--params", "--set"},  # tracking.* only
        "app": set(),  # its own options only: host, port, checkpoints, device
        "tracking-server": set(),  # its own options only: the store and where the artifacts go
        "dag": {"--params"},  # the paths of the generated files
        "bench": {"--preset"},
        "record": {"--params", "--overrides", "--set"},  # the values a Snakemake run used, for dvc.lock
        "checkpoints": {"--params", "--experiment", "--set"},  # paths.checkpoints; the experiment's folder
    }
    assert set(expected) == set(COMMANDS)
    for name, wanted in expected.items():
        parser = CliParser(prog=f"cpabanim {name}")
        importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
        assert option_strings(parser) & LAYERS == wanted, name


def test_params_says_none_when_nothing_differs(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("")
    assert main(["params", "--params", str(tmp_path / "params.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == ["  (none)"]
    assert main(["params", "--params", str(tmp_path / "params.yaml"), "--set", "train.batch_size=2"]) == 0
    assert "train.batch_size" in capsys.readouterr().out


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_write_lines_not_carriage_returns_when_not_a_terminal():
    log = io.StringIO()
    for _ in progress_bar(range(50), stream=log, desc="preprocess", unit="video"):
        pass
    text = log.getvalue()
    assert text and "\r" not in text and text.endswith("\n")
    assert all(line.startswith("preprocess") for line in text.splitlines())
    assert "50/50" in text.splitlines()[-1]
    terminal = FakeTerminal()
    for _ in progress_bar(range(3), stream=terminal, desc="x"):
        pass
    assert "\r" in terminal.getvalue()  # a terminal gets tqdm's live bar
