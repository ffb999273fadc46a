"""Safe loading: no checkpoint or weight file can run code; ours (old and new format) load with weights_only."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cpabanim.config.typed import ModelConfig
from cpabanim.errors import CpabanimError
from cpabanim.models.checkpoint import FORMAT_VERSION, load_checkpoint, read_checkpoint, save_checkpoint
from cpabanim.weights import safe_torch_load
from tests.conftest import PROJECT_ROOT
from tests.reliability.helpers import assert_no_unsafe_advice, legacy_rng_state, write_malicious_checkpoint


def _tiny_model():
    from cpabanim.models.full import AnimationModel

    return AnimationModel(ModelConfig(num_cpab=1, motion="tps"))


@pytest.mark.parametrize(
    ("zip_format", "protocol", "why"),
    [(True, 2, "io.open"), (False, 2, "io.open"), (False, 4, "would run code")],
    ids=["torch-zip", "pickle-protocol-2", "pickle-protocol-4"],
)
def test_a_malicious_checkpoint_is_refused_and_never_runs(tmp_path, zip_format, protocol, why):
    marker = tmp_path / "code-ran"
    path = write_malicious_checkpoint(tmp_path / "ckpt" / "last.pt", marker, zip_format, protocol)
    for load in (read_checkpoint, load_checkpoint):
        with pytest.raises(CpabanimError) as info:
            load(path)
        message = str(info.value)
        assert str(path) in message and "refused" in message and why in message
        assert_no_unsafe_advice(message)  # never the advice to load it unsafely
    assert not marker.exists()


def test_a_training_resume_from_a_malicious_checkpoint_is_refused(tmp_path):
    from cpabanim.training.loop import train
    from tests.train.helpers import MovingBlobDataset, job_of, tiny_params

    params = tiny_params(tmp_path, motion="tps", max_steps=2)
    marker = tmp_path / "code-ran"
    write_malicious_checkpoint(Path(params["paths"]["checkpoints"]) / "last.pt", marker)
    with pytest.raises(CpabanimError, match="refused"):
        train(job_of(params), dataset=MovingBlobDataset(num_items=2))
    assert not marker.exists()


def test_a_weight_file_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    path = write_malicious_checkpoint(tmp_path / "weights.pth", marker)
    with pytest.raises(CpabanimError, match="refused") as info:
        safe_torch_load(path, "weight file", "delete it")
    assert_no_unsafe_advice(str(info.value))
    assert not marker.exists()


def test_checkpoints_hold_only_what_weights_only_loads_and_round_trip_the_rng_exactly(tmp_path):
    np.random.seed(3)
    random.seed(4)
    rng = legacy_rng_state()
    extra = {"numpy_scalar": np.float32(0.25), "labels": np.array([["a", "bc"]])}
    path = save_checkpoint(tmp_path / "last.pt", _tiny_model(), step=3, params={"seed": 1}, rng_state=rng, extra=extra)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    state = read_checkpoint(path)
    assert state["format"] == FORMAT_VERSION
    numpy_state = state["rng_state"]["numpy"]
    assert numpy_state[0] == rng["numpy"][0] and numpy_state[2:] == rng["numpy"][2:]
    assert numpy_state[1].dtype == np.uint32 and np.array_equal(numpy_state[1], rng["numpy"][1])
    assert state["rng_state"]["python"] == rng["python"]
    assert torch.equal(state["rng_state"]["torch"], rng["torch"])
    assert state["numpy_scalar"] == 0.25 and state["labels"].tolist() == [["a", "bc"]]
    # restoring gives the same next draws as the generator that was saved
    expected = (np.random.rand(3), random.random())
    np.random.set_state(numpy_state)
    random.setstate(state["rng_state"]["python"])
    assert np.array_equal(np.random.rand(3), expected[0]) and random.random() == expected[1]


def test_an_old_format_checkpoint_still_loads(tmp_path):
    """Format 1 pickled numpy's RNG array; its few numpy globals are allowed, nothing else."""
    model = _tiny_model()
    rng = legacy_rng_state()
    legacy = {
        "format": 1,
        "model_params": model.params,
        "model": model.state_dict(),
        "optimizers": {},
        "schedulers": {},
        "step": 5,
        "epoch": 1,
        "params": {"seed": 0},
        "rng_state": rng,
        "complete": False,
    }
    path = tmp_path / "last.pt"
    torch.save(legacy, path)  # exactly what the format-1 save_checkpoint wrote
    assert "numpy.ndarray" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    loaded, extra = load_checkpoint(path)
    assert extra["step"] == 5 and extra["format"] == 1
    assert np.array_equal(extra["rng_state"]["numpy"][1], rng["numpy"][1])
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_an_unloadable_object_is_refused_at_save_time_and_leaves_nothing(tmp_path):
    from fractions import Fraction  # picklable, but not a plain container: weights_only would refuse it

    folder = tmp_path / "ckpt"
    save_checkpoint(folder / "last.pt", _tiny_model(), step=1)
    before = (folder / "last.pt").read_bytes()
    with pytest.raises(CpabanimError, match="only plain"):
        save_checkpoint(folder / "last.pt", _tiny_model(), step=2, extra={"bad": Fraction(1, 3)})
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt"]
    assert (folder / "last.pt").read_bytes() == before


def test_every_torch_load_in_the_package_is_weights_only():
    """A guard: a new torch.load without weights_only=True (or with False) fails here."""
    offenders = []
    for source in sorted((PROJECT_ROOT / "cpabanim").rglob("*.py")):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                flags = {k.arg: k.value for k in node.keywords}
                safe = isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True
                if not safe:
                    offenders.append(f"{source.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert offenders == []


def test_a_checkpoint_of_an_older_layout_fails_in_one_line_naming_the_tensors(tmp_path):
    model = _tiny_model()
    state = dict(model.state_dict())
    dropped = next(k for k in state if k.startswith("avd."))
    state.pop(dropped)
    state["avd.old_layer.weight"] = torch.zeros(2)  # e.g. the AVD layout before TPSMM's 69 tensors
    path = tmp_path / "last.pt"
    torch.save({"format": FORMAT_VERSION, "model_params": model.params, "model": state, "step": 1}, path)
    with pytest.raises(CpabanimError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert (
        "\n" not in message and f"missing 1: {dropped}" in message and "unexpected 1: avd.old_layer.weight" in message
    )
    assert "train again" in message
