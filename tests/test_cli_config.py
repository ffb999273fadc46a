"""Parameters in layers (defaults < preset < params.yaml < experiment < command line), validated at load time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cpabanim.cli import COMMANDS, main
from cpabanim.config.layers import load_params
from cpabanim.config.mappings import deep_merge, flatten
from cpabanim.config.overrides import overrides_from_snakemake, parse_override, split_assignments
from cpabanim.config.schema import defaults, schema
from cpabanim.config.section import Section, restrict
from cpabanim.errors import ConfigError
from cpabanim.pipeline import STAGE_MODULES, all_stages, distinct_experiments

from .conftest import PROJECT_ROOT
from .test_cli import cli_error


def project(
    tmp_path: Path,
    params_yaml: str = "",
    presets: dict[str, str] | None = None,
    experiments: dict[str, str] | None = None,
) -> Path:
    """A folder with params.yaml, presets/ and experiments/ as given."""
    (tmp_path / "params.yaml").write_text(params_yaml)
    for folder, files in (("presets", presets or {}), ("experiments", experiments or {})):
        (tmp_path / folder).mkdir(exist_ok=True)
        for name, text in files.items():
            (tmp_path / folder / f"{name}.yaml").write_text(text)
    return tmp_path / "params.yaml"


def test_the_project_params_are_the_embedded_default():
    params = load_params(PROJECT_ROOT / "params.yaml")
    # seeds: [0] is what null means with seed 0, written out for dvc.yaml to loop over
    assert params == {**defaults(), "preset": None, "experiment": "default", "seeds": [0]}
    assert params["tracking"]["uri"].startswith("sqlite:///") and params["data"]["source"] == "synthetic"


def test_every_schema_leaf_has_one_default_and_the_defaults_validate():
    from cpabanim.config.schema import validate

    def leaves(node, where=""):
        if "properties" in node and "default" not in node:
            for key, sub in node["properties"].items():
                yield from leaves(sub, f"{where}.{key}".lstrip("."))
        else:
            yield where, node

    missing = [where for where, node in leaves(schema()) if "default" not in node]
    assert not missing
    validate(defaults())


def test_command_line_beats_params_file_beats_preset(tmp_path):
    path = project(
        tmp_path,
        "preset: big\ntrain: {batch_size: 3}\n",
        presets={"big": "train: {batch_size: 8, lr_generator: 1.0e-3}\nseed: 4\n"},
    )
    assert load_params(path)["train"]["batch_size"] == 3  # params.yaml over the preset
    assert (
        load_params(path)["train"]["lr_generator"] == 1.0e-3 and load_params(path)["seed"] == 4
    )  # preset over defaults
    assert load_params(path, overrides=["train.batch_size=2"])["train"]["batch_size"] == 2  # --set over both
    chosen_on_the_command_line = load_params(project(tmp_path, "train: {batch_size: 3}\n"), preset="big")
    assert chosen_on_the_command_line["train"]["batch_size"] == 3 and chosen_on_the_command_line["preset"] == "big"
    by_set = load_params(tmp_path / "params.yaml", overrides=["preset=big"])
    assert by_set == chosen_on_the_command_line


def test_experiment_overlay_sits_between_params_file_and_command_line(tmp_path):
    path = project(
        tmp_path, "experiment: tps\nmodel: {motion: cpab, num_cpab: 3}\n", experiments={"tps": "model: {motion: tps}\n"}
    )
    params = load_params(path)
    assert params["model"]["motion"] == "tps" and params["model"]["num_cpab"] == 3
    assert load_params(path, overrides=["model.motion=cpab"])["model"]["motion"] == "cpab"
    assert load_params(path, experiment="default")["model"]["motion"] == "cpab"
    with pytest.raises(ConfigError, match="experiment 'nope' not found"):
        load_params(path, experiment="nope")
    with pytest.raises(ConfigError, match="not a plain name"):
        load_params(path, experiment="../escape")
    with pytest.raises(ConfigError, match="taken by the comparison report"):
        load_params(path, experiment="report")


def test_invalid_values_are_reported_with_their_path(tmp_path):
    with pytest.raises(ConfigError, match="device"):
        load_params(project(tmp_path, "device: tpu\n"))
    with pytest.raises(ConfigError, match="train.max_steps"):  # 4.0 is not an integer (JSON Schema would accept it)
        load_params(project(tmp_path, "train: {max_steps: 4.0}\n"))
    with pytest.raises(ConfigError, match="tracking.compare_runs|compare_runs"):
        load_params(project(tmp_path, "tracking: {compare_runs: 0}\n"))


def test_inconsistent_sizes_fail_when_parameters_load(tmp_path):
    with pytest.raises(ConfigError, match="scale_factor"):
        load_params(project(tmp_path, "model: {dense_motion: {scale_factor: 0.3}}\n"))
    with pytest.raises(ConfigError, match="divisible"):
        load_params(project(tmp_path, "data: {frame_size: 36}\n"))
    with pytest.raises(ConfigError, match="batch_size"):
        load_params(project(tmp_path, "data: {num_repeats: 1, synthetic: {num_train: 2}}\ntrain: {batch_size: 4}\n"))


def test_overrides_parse_as_yaml_and_malformed_ones_are_one_clear_error():
    assert parse_override("a.b=1e-4") == {"a": {"b": 1e-4}}
    assert parse_override("a=[1, 2]") == {"a": [1, 2]}
    merged = deep_merge({"a": {"b": 1, "c": [1, 2]}, "d": 2}, {"a": {"c": [3]}})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 2} and flatten(merged) == {"a.b": 1, "a.c": [3], "d": 2}
    for bad in ("no_equals_sign", "=3", "a..b=1"):
        with pytest.raises(ConfigError):
            parse_override(bad)
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override("train.betas=[0.5, 0.9")


def test_snakemake_config_forms_become_the_command_line_layer():
    # Snakemake parses --config values with YAML's BaseLoader (strings everywhere) and refuses dotted keys
    config = {"model": {"motion": "tps"}, "set": ["train.max_steps=5", "data.frame_size=32"], "experiments": ["a"]}
    assert overrides_from_snakemake(config) == {
        "model": {"motion": "tps"},
        "train": {"max_steps": 5},
        "data": {"frame_size": 32},
    }
    assert overrides_from_snakemake({"train": {"lr_generator": "1e-3", "betas": ["0.5", "0.9"]}}) == {
        "train": {"lr_generator": 1e-3, "betas": [0.5, 0.9]}
    }


def test_stages_see_only_what_they_declare_and_cannot_change_it():
    params = load_params(PROJECT_ROOT / "params.yaml")
    view = Section(restrict(params, ("seed", "reconstruct")))
    assert view.reconstruct.batch_size == params["reconstruct"]["batch_size"] and view["seed"] == 0
    with pytest.raises(KeyError, match="train.*not among the parameters"):
        view["train"]
    with pytest.raises(TypeError):
        view.reconstruct["batch_size"] = 1
    with pytest.raises(ConfigError, match="schema does not have"):
        restrict(params, ("train.nope",))


def test_every_stage_declares_keys_the_schema_has():
    params = load_params(PROJECT_ROOT / "params.yaml")
    for stage in all_stages().values():
        restrict(params, (*stage.params, *stage.settings))


def test_generated_pipeline_files_are_up_to_date():
    out = subprocess.run(
        [sys.executable, "-m", "cpabanim", "dag", "--check"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_cli_lists_every_stage_and_command():
    out = subprocess.run([sys.executable, "-m", "cpabanim", "--help"], capture_output=True, text=True, check=True)
    for name in (*STAGE_MODULES, *COMMANDS):
        assert name in out.stdout


def test_cli_errors_are_one_line(tmp_path, caplog):
    assert main(["train", "--params", str(tmp_path / "nope.yaml")]) == 1
    assert cli_error(caplog) == (
        "cpabanim train",
        f"parameter file {tmp_path / 'nope.yaml'} not found (run from the project root or pass --params)",
    )
    caplog.clear()
    path = project(tmp_path, "")
    assert main(["train", "--params", str(path), "--set", "train.betas=[0.5"]) == 1
    assert "not valid YAML" in cli_error(caplog)[1] and "Traceback" not in caplog.text
    caplog.clear()
    assert main(["train", "--params", str(path), "--set", "train.lr_generatr=1"]) == 1
    assert cli_error(caplog)[1].endswith("train.lr_generatr: no such parameter (did you mean 'train.lr_generator'?)")


def test_a_misspelt_key_in_params_yaml_names_the_closest_key(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^invalid parameters: model.dense_motion.scale_factr: no such parameter "
        r"\(did you mean 'model.dense_motion.scale_factor'\?\); trian: no such "
        r"parameter \(did you mean 'train'\?\)$",
    ):
        load_params(project(tmp_path, "model: {dense_motion: {scale_factr: 0.5}}\ntrian: {}\n"))


def test_file_tracking_stores_are_refused_before_any_work(tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    project(tmp_path, "tracking: {uri: 'file:./mlruns'}\n")
    assert main(["download"]) == 1
    assert "file store is not supported" in caplog.text
    assert not (tmp_path / "data").exists()


PRESETS = ["vox-256", "taichi-256", "ted-384", "mgif-256"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_is_valid_and_keeps_the_paths(name):
    params = load_params(PROJECT_ROOT / "params.yaml", preset=name)
    assert params["preset"] == name
    assert params["paths"] == load_params(PROJECT_ROOT / "params.yaml")["paths"]
    assert params["model"]["num_cpab"] == 10 and params["train"]["batch_size"] == 8  # the paper's values


@pytest.mark.parametrize("name", sorted(p.stem for p in (PROJECT_ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_is_valid_on_every_preset(name):
    for preset in [None, *PRESETS]:
        params = load_params(PROJECT_ROOT / "params.yaml", preset=preset, experiment=name)
        assert params["experiment"] == name


def test_bad_presets_give_clear_errors(tmp_path):
    path = project(tmp_path, "", presets={"bad": "train: {batch_size: 0}\n", "moves": "paths: {outputs: x}\n"})
    with pytest.raises(ConfigError, match="not found.*available"):
        load_params(path, preset="vox-512")
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_params(path, preset="bad")
    with pytest.raises(ConfigError, match="must not set `paths`"):
        load_params(path, preset="moves")


def test_a_read_only_or_full_disk_is_one_line_naming_the_path(tmp_path, caplog, monkeypatch):
    import errno

    from cpabanim.pipeline import masks

    monkeypatch.chdir(tmp_path)
    project(tmp_path, "tracking: {enabled: false}\n")
    (tmp_path / "data" / "processed").mkdir(parents=True)

    def read_only(cfg, io, **options):
        raise OSError(errno.EROFS, "Read-only file system", str(io.outputs["masks"] / "meta.json"))

    monkeypatch.setattr(masks, "run", read_only)
    assert main(["masks"]) == 1
    assert "cannot write data/masks/meta.json: Read-only file system" in caplog.text
    assert "Traceback" not in caplog.text


def test_snakemake_set_lists_may_nest_brackets():
    # Snakemake hands `set='[a=[1,2], b=3]'` over as one string (its YAML reading of the list fails)
    assert split_assignments("[train.epoch_milestones=[18,22], train.max_steps=7]") == [
        "train.epoch_milestones=[18,22]",
        "train.max_steps=7",
    ]
    assert split_assignments("model={motion: tps, fit_method: lm}") == ["model={motion: tps, fit_method: lm}"]
    values = overrides_from_snakemake({"set": "[train.epoch_milestones=[18,22], train.betas=[0.5, 0.9]]"})
    assert values == {"train": {"epoch_milestones": [18, 22], "betas": [0.5, 0.9]}}
    with pytest.raises(ConfigError, match="unbalanced"):
        split_assignments("[train.epoch_milestones=[18,22]")


def test_an_experiment_with_the_parameters_of_another_is_that_experiment():
    base = load_params(PROJECT_ROOT / "params.yaml")
    resolved = {name: load_params(PROJECT_ROOT / "params.yaml", experiment=name) for name in ("default", "cpab", "tps")}
    assert base == resolved["default"]
    unique, aliases = distinct_experiments(resolved, ["cpab", "tps", "default"])
    assert unique == ["default", "tps"] and aliases == {"cpab": "default"}
    assert distinct_experiments(resolved, ["tps"]) == (["tps"], {})


def test_a_stage_output_pointed_at_a_folder_of_the_users_is_refused_and_nothing_changes(tmp_path, caplog, monkeypatch):
    """Never overwrite what the project did not write (issue 24): preprocess would remove stale videos there."""
    from cpabanim.pipeline import preprocess as preprocess_stage

    monkeypatch.chdir(tmp_path)
    project(tmp_path, "tracking: {enabled: false}\n")
    (tmp_path / "data" / "raw").mkdir(parents=True)  # the input preprocess checks first
    mine = tmp_path / "mine"
    (mine / "train" / "clip").mkdir(parents=True)
    (mine / "note.txt").write_text("keep me")
    ran = []
    monkeypatch.setattr(preprocess_stage, "run", lambda cfg, io, **options: ran.append(io))
    assert main(["preprocess", "--set", f"paths.processed={mine}"]) == 1
    assert f"{mine} holds files cpabanim did not write ('note.txt', 'train')" in caplog.text
    assert "set paths.processed to another folder" in caplog.text and "Traceback" not in caplog.text
    assert not ran and sorted(p.name for p in mine.iterdir()) == ["note.txt", "train"]
    # a folder cpabanim claimed is its own: the stage runs again there
    from cpabanim import files

    fresh = files.claim_output_folder(tmp_path / "fresh", "cpabanim preprocess")
    (fresh / "manifest.json").write_text("{}")
    assert main(["preprocess", "--set", f"paths.processed={fresh}"]) == 0 and len(ran) == 1
