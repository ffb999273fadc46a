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


# ---- presets: the documented switches, validated against the schema -------------------------------------

PRESETS = ["vox-256", "taichi-256", "ted-384", "mgif-256"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_is_valid_and_keeps_the_paths(name):
    params = load_params(PROJECT_ROOT / "params.yaml", preset=name)
    assert params["preset"] == name
    assert params["paths"] == load_params(PROJECT_ROOT / "params.yaml")["paths"]
    assert params["model"]["num_cpab"] == 10 and params["train"]["batch_size"] == 8  # paper.md §6


def test_preset_key_in_params_equals_preset_option(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "tiny.yaml").write_text("seed: 5\n")
    text = (PROJECT_ROOT / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text.replace("preset: null", "preset: tiny"))
    by_key = load_params(tmp_path / "params.yaml")
    (tmp_path / "plain.yaml").write_text(text)
    by_option = load_params(tmp_path / "plain.yaml", preset="tiny")
    assert by_key["seed"] == by_option["seed"] == 5 and by_key == by_option


def test_bad_presets_give_clear_errors(tmp_path):
    (tmp_path / "presets").mkdir()
    (tmp_path / "params.yaml").write_text((PROJECT_ROOT / "params.yaml").read_text())
    with pytest.raises(ConfigError, match="not found.*available presets"):
        load_params(tmp_path / "params.yaml", preset="vox-512")
    (tmp_path / "presets" / "bad.yaml").write_text("train: {batch_size: 0}\n")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_params(tmp_path / "params.yaml", preset="bad")
    (tmp_path / "presets" / "moves.yaml").write_text("paths: {outputs: elsewhere}\n")
    with pytest.raises(ConfigError, match="must not set `paths`"):
        load_params(tmp_path / "params.yaml", preset="moves")


def test_tracking_section_is_validated(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text((PROJECT_ROOT / "params.yaml").read_text().replace("compare_runs: 10", "compare_runs: 0"))
    with pytest.raises(ConfigError, match="tracking.compare_runs"):
        load_params(bad)
