"""A restart never loses a trained model (issue 24): every superseded checkpoint is kept, numbered, with its
params and a json of what it was; `cpabanim checkpoints` lists them."""

from __future__ import annotations

import json
import os

from cpabanim import cli
from cpabanim.config.paths import SUPERSEDED_NAME
from cpabanim.models.checkpoint import read_checkpoint
from cpabanim.training.job import TrainingJob
from cpabanim.training.loop import train
from cpabanim.training.state import SUPERSEDED_FOLDER, keep_superseded, params_digest, superseded_models
from tests.train.helpers import MovingBlobDataset, tiny_params


def _job(tmp_path, lr: float) -> TrainingJob:
    """A 1-step tiny training of experiment tps, seed 0, under ``tmp_path/ckpts`` (the layout the CLI lists)."""
    params = tiny_params(tmp_path, motion="tps", max_steps=1, lr_generator=lr)
    params["paths"]["checkpoints"] = str(tmp_path / "ckpts")
    return TrainingJob.of(params, checkpoint=tmp_path / "ckpts" / "tps" / "seed0" / "last.pt")


def test_every_restart_keeps_the_model_it_supersedes_numbered_and_listed(tmp_path, capsys):
    dataset = MovingBlobDataset(num_items=2)
    rates = [2.0e-4, 5.0e-4, 1.0e-3]
    for lr in rates:  # train, change train.lr_generator, train, change it again, train
        train(_job(tmp_path, lr), dataset=dataset)
    folder = tmp_path / "ckpts" / "tps" / "seed0"
    kept = superseded_models(folder)
    assert [k["path"].name for k in kept] == ["001.pt", "002.pt"]
    for record, lr in zip(kept, rates):  # each with its own params, inside the checkpoint and digested beside it
        state = read_checkpoint(record["path"])
        assert state["params"]["train"]["lr_generator"] == lr
        assert record["params_digest"] == params_digest(state["params"]) and record["changed"] == ["train.lr_generator"]
        assert record["step"] == 1 and record["kept_at"]
    assert read_checkpoint(folder / "last.pt")["params"]["train"]["lr_generator"] == rates[-1]
    assert not (folder / SUPERSEDED_NAME).exists()
    # listed, with the experiment filter and without
    for extra in ([], ["--experiment", "tps"]):
        assert cli.main(["checkpoints", "--set", f"paths.checkpoints={tmp_path / 'ckpts'}", *extra]) == 0
        out = capsys.readouterr().out
        assert str(folder / "last.pt") in out and "superseded/001.pt" in out and "superseded/002.pt" in out
        assert "when train.lr_generator changed" in out


def _save(path, content: bytes) -> None:
    """Replace ``path`` by a new file, as every checkpoint save does (write a temporary file, rename it over)."""
    temp = path.with_name(f".{path.name}.tmp1")
    temp.write_bytes(content)
    os.replace(temp, path)


def test_a_kept_model_is_never_overwritten_and_an_old_superseded_file_is_moved_in(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    last = folder / "last.pt"
    (folder / SUPERSEDED_NAME).write_bytes(b"the model an older cpabanim set aside")
    _save(last, b"model one")
    first = keep_superseded(last, {"step": 3, "params": {"seed": 1}}, ["seed"])
    _save(last, b"model two")
    second = keep_superseded(last, {"step": 4, "params": {"seed": 2}}, ["seed"])
    kept = folder / SUPERSEDED_FOLDER
    assert [p.name for p in sorted(kept.glob("*.pt"))] == ["001.pt", "002.pt", "003.pt"]
    assert (kept / "001.pt").read_bytes() == b"the model an older cpabanim set aside"
    assert not (folder / SUPERSEDED_NAME).exists()
    assert (first.name, second.name) == ("002.pt", "003.pt")
    assert first.read_bytes() == b"model one" and second.read_bytes() == b"model two"
    assert json.loads((kept / "002.json").read_text())["step"] == 3
    # a model removed by hand leaves its record, and its number is never given to another model
    (kept / "002.pt").unlink()
    _save(last, b"model three")
    assert keep_superseded(last, {"step": 5}, ["seed"]).name == "004.pt"
    assert [k["path"].name for k in superseded_models(folder)] == ["001.pt", "003.pt", "004.pt"]


def test_listing_an_empty_folder_says_how_to_train(tmp_path, capsys):
    assert cli.main(["checkpoints", "--set", f"paths.checkpoints={tmp_path / 'none'}"]) == 0
    assert "no trained models in" in capsys.readouterr().out


def test_a_restart_stopped_before_its_first_save_does_not_keep_the_same_model_twice(tmp_path):
    last = tmp_path / "last.pt"
    last.write_bytes(b"model one")
    first = keep_superseded(last, {"step": 3}, ["seed"])
    assert keep_superseded(last, {"step": 3}, ["seed"]) == first  # last.pt was never replaced in between
    assert [k["path"].name for k in superseded_models(tmp_path)] == ["001.pt"]
