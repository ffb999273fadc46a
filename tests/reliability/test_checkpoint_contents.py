"""What a checkpoint or weight file holds is checked before it costs memory or shows a traceback (issue 24):
recorded model params against the schema's ranges, the zip directory against decompression bombs, tensors
against the params' shapes; a pickle or random bytes as re-id weights is one line naming what to do."""

from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch

from cpabanim import weights
from cpabanim.config.typed import ModelConfig
from cpabanim.errors import CpabanimError
from cpabanim.models import full
from cpabanim.models.checkpoint import FORMAT_VERSION, load_checkpoint, read_checkpoint, save_checkpoint
from tests.reliability.helpers import assert_no_unsafe_advice, write_malicious_checkpoint


def _tiny_model():
    return full.AnimationModel(ModelConfig(num_cpab=1, motion="tps"))


def _checkpoint_with_params(path, **changes):
    """A checkpoint of the tiny model whose recorded model params are changed (nested keys as dicts)."""
    params = ModelConfig(num_cpab=1, motion="tps").to_dict()  # no model built: the fixture below forbids it
    for key, value in changes.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    torch.save({"format": FORMAT_VERSION, "model_params": params, "model": {}, "step": 1}, path)
    return path


@pytest.fixture
def no_model_is_built(monkeypatch):
    """Fails the test if an AnimationModel is constructed (the check must come first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built from params that should have been refused")

    monkeypatch.setattr(full.AnimationModel, "__init__", refuse)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"generator": {"block_expansion": 16384}}, "model.generator.block_expansion 16384 is above"),
        ({"dense_motion": {"max_features": 100000}}, "model.dense_motion.max_features 100000 is above"),
        ({"num_cpab": 0}, "model.num_cpab 0 is below"),
        ({"num_channels": 3.0}, "model.num_channels 3.0 is not of type integer"),
    ],
    ids=["16384-channel-generator", "huge-hourglass", "no-keypoints", "float-channels"],
)
def test_recorded_model_params_out_of_range_are_refused_before_any_model_is_built(
    tmp_path, no_model_is_built, changes, named
):
    path = _checkpoint_with_params(tmp_path / "last.pt", **changes)
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CpabanimError) as info:
            load(path)
        message = str(info.value)
        assert f"checkpoint {path} is not a cpabanim checkpoint (" in message and named in message
        assert "\n" not in message


def test_an_unknown_motion_is_one_line_naming_the_choices(tmp_path, no_model_is_built):
    path = _checkpoint_with_params(tmp_path / "last.pt", motion="lstm")
    with pytest.raises(CpabanimError) as info:
        load_checkpoint(path)
    assert (
        str(info.value)
        == f"checkpoint {path} is not a cpabanim checkpoint (model.motion 'lstm' is not one of cpab, tps)"
    )


def _zip_bomb(path, inflated: int) -> None:
    """A torch-shaped zip whose one storage record is ``inflated`` zero bytes, deflated (a few KiB per 64 MiB)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"model": {}}, protocol=2))
        with archive.open("archive/data/0", "w") as record:
            chunk = bytes(1 << 22)
            for _ in range(inflated // len(chunk)):
                record.write(chunk)


def test_a_zip_bomb_is_refused_from_its_directory_before_torch_reads_it(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    _zip_bomb(path, 64 << 20)
    assert path.stat().st_size < 1 << 20

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called on a zip bomb")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(CpabanimError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "archive/data/0" in message and "decompression bomb" in message
    assert "\n" not in message
    # the absolute bound too: records that inflate past it (here lowered to 1 MiB) whatever their ratio
    monkeypatch.setattr(weights, "MAX_COMPRESSION_RATIO", 10**9)
    monkeypatch.setattr(weights, "MAX_UNPACKED_BYTES", 1 << 20)
    with pytest.raises(CpabanimError, match="inflate to 67108"):
        read_checkpoint(path)


def test_real_checkpoints_pass_the_archive_check(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", _tiny_model(), step=2)
    weights.check_archive(path, "checkpoint", "fix")
    assert load_checkpoint(path)[1]["step"] == 2


def test_tensors_of_another_size_than_the_params_are_one_line_naming_the_key_and_both_shapes(tmp_path):
    model = _tiny_model()
    state = dict(model.state_dict())
    key = next(k for k, v in state.items() if k.startswith("generator.") and v.dim() == 4)
    expected = list(state[key].shape)
    state[key] = torch.zeros(expected[0] * 2, *expected[1:])
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT_VERSION, "model_params": model.params, "model": state, "step": 1}, path)
    with pytest.raises(CpabanimError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and key in message and "\n" not in message
    assert f"{[expected[0] * 2, *expected[1:]]} in the file, {expected} from the params" in message
    assert "train again" in message


def test_a_training_resume_from_tensors_of_another_size_is_one_line(tmp_path):
    from cpabanim.training.loop import train
    from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

    params = tiny_params(tmp_path, motion="tps", max_steps=1)
    dataset = MovingBlobDataset(num_items=2)
    train(job_of(params), dataset=dataset)
    path = tmp_path / "ckpt" / "last.pt"
    state = torch.load(path, weights_only=True)
    key = next(k for k in state["model"] if k.endswith(".weight") and state["model"][k].dim() == 4)
    state["model"][key] = torch.zeros(1, 1, 1, 1)
    state["complete"] = False
    torch.save(state, path)
    longer = tiny_params(tmp_path, motion="tps", max_steps=2)
    with pytest.raises(CpabanimError, match=f"{key} has shape \\[1, 1, 1, 1\\] in the file") as info:
        train(job_of(longer), dataset=dataset)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_pickle_or_random_bytes_as_reid_weights_is_one_line_naming_the_source(tmp_path):
    from cpabanim.evaluation.extractors import ReidIdentity

    marker = tmp_path / "code-ran"
    hostile = write_malicious_checkpoint(tmp_path / "net_last.pth", marker, zip_format=False, protocol=4)
    with pytest.raises(CpabanimError) as info:
        ReidIdentity(hostile)
    message = str(info.value)
    assert f"{hostile}: refused: loading it would run code (a pickle with objects other than tensors" in message
    assert weights.UNSAFE_ADVICE in message and "get the weights from Person_reID_baseline_pytorch" in message
    assert_no_unsafe_advice(message)
    assert not marker.exists()
    for name, content in [
        ("random.pth", np.random.default_rng(0).bytes(4096)),
        ("plain-pickle.pth", pickle.dumps({"model.conv1.weight": [1.0, 2.0]}, protocol=4)),  # runs no code
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CpabanimError) as info:
            ReidIdentity(path)
        message = str(info.value)
        assert f"{path} is not a PyTorch weights file (" in message and "Person_reID_baseline_pytorch" in message
        assert "run code" not in message
        assert_no_unsafe_advice(message)
