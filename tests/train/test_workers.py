"""The input pipeline does not change what is learned: the same parameters, bit for bit on CPU, after N steps
with 0, 1 and 2 DataLoader workers and after an interrupted run resumed with another worker count.

The data is a real FramesDataset (PNG frame folders) with every augmentation on, so that frame choice, flips
and colour jitter are drawn per item: any dependence on which process builds an item would show."""

from __future__ import annotations

import pytest
import torch

from cpabanim.models.checkpoint import load_checkpoint
from cpabanim.training.loop import train
from tests.data.helpers import moving_square_video, write_frame_folder
from tests.train.helpers import job_of, tiny_params

AUGMENTATION = {
    "horizontal_flip": True,
    "time_flip": True,
    "resize_ratio": [0.9, 1.1],
    "jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1},
}


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    root = tmp_path_factory.mktemp("processed")
    for i in range(6):  # 6 items / batch 2 = 3 batches per epoch
        write_frame_folder(root / "train" / f"clip{i}", moving_square_video(5, 32, seed=i))
    return root


def _params(tmp_path, processed, name: str, workers: int):
    params = tiny_params(
        tmp_path / name,
        motion="cpab",
        max_steps=4,
        num_workers=workers,
        num_epochs=10,
        dropout_epoch=2,
        checkpoint_every=0,
    )
    params["paths"]["processed"] = str(processed)
    params["data"]["frame_size"] = 32
    params["data"]["augmentation"] = AUGMENTATION
    return job_of(params)


def _state(tmp_path, name: str):
    model, extra = load_checkpoint(tmp_path / name / "ckpt" / "last.pt")
    assert extra["complete"] and extra["step"] == 4
    return model.state_dict()


def test_workers_and_resume_give_the_same_parameters(tmp_path, processed):
    for name, workers in (("w0", 0), ("w1", 1), ("w2", 2)):
        assert train(_params(tmp_path, processed, name, workers))["step"] == 4
    # interrupted mid-epoch (step 2 of 3) with 2 workers, resumed with 1: crosses the epoch boundary
    assert train(_params(tmp_path, processed, "resumed", 2), stop_after=2)["step"] == 2
    assert train(_params(tmp_path, processed, "resumed", 1))["step"] == 4
    reference = _state(tmp_path, "w0")
    for name in ("w1", "w2", "resumed"):
        for key, value in _state(tmp_path, name).items():
            assert torch.equal(value, reference[key]), (name, key)
