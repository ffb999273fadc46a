"""The stage CLI and params.yaml loading/validation."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cpabanim.cli import STAGES, main
from cpabanim.config import apply_override, deep_merge, flatten, load_params
from cpabanim.errors import ConfigError

from .conftest import PROJECT_ROOT


def test_params_yaml_is_valid():
    params = load_params(PROJECT_ROOT / "params.yaml")
    assert params["tracking"]["uri"].startswith("sqlite:///")


def test_invalid_value_is_reported_with_its_path(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text((PROJECT_ROOT / "params.yaml").read_text().replace("device: auto", "device: tpu"))
    with pytest.raises(ConfigError, match="device"):
        load_params(bad)


def test_overrides_and_merge():
    params = {"a": {"b": 1, "c": [1, 2]}, "d": 2}
    apply_override(params, "a.b=1e-4")
    assert params["a"]["b"] == pytest.approx(1e-4)
    merged = deep_merge(params, {"a": {"c": [3]}})
    assert merged["a"] == {"b": 1e-4, "c": [3]} and params["a"]["c"] == [1, 2]
    assert flatten(merged) == {"a.b": 1e-4, "a.c": [3], "d": 2}
    with pytest.raises(ConfigError):
        apply_override(params, "no_equals_sign")


def test_cli_lists_every_stage():
    out = subprocess.run([sys.executable, "-m", "cpabanim", "--help"], capture_output=True, text=True, check=True)
    for stage in STAGES:
        assert stage in out.stdout


def test_cli_missing_params_file_is_a_clear_error(tmp_path, caplog):
    code = main(["train", "--params", str(tmp_path / "nope.yaml")])
    assert code == 1
    assert "not found" in caplog.text
