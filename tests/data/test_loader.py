"""The training input pipeline: the (seed, epoch) permutation with DDP sharding and mid-epoch resume, item
seeds that depend on (seed, epoch, index) only, and DataLoader batches that do not depend on the workers."""

from __future__ import annotations

import pytest
import torch

from cpabanim.data.dataset import FramesDataset
from cpabanim.data.loader import (
    EpochBatchSampler,
    ItemKey,
    collate,
    epoch_order,
    item_seed,
    make_loader,
    resolve_num_workers,
    to_device,
)
from cpabanim.errors import ConfigError
from tests.data.helpers import moving_square_video, write_frame_folder


def test_sampler_keeps_the_epoch_permutation_and_resumes_mid_epoch():
    sampler = EpochBatchSampler(num_items=10, batch_size=3, seed=5)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert [[k.index for k in b] for b in batches] == epoch_order(10, 5, 2, 0, 1, 3) and len(sampler) == 3
    assert all(k.seed == item_seed(5, 2, k.index) for b in batches for k in b)
    sampler.set_epoch(2, start=1)
    assert list(sampler) == batches[1:] and len(sampler) == 2
    sampler.set_epoch(3)
    assert list(sampler) != batches


def test_sampler_shards_like_distributed_sampler():
    shards = []
    for rank in range(3):
        sampler = EpochBatchSampler(num_items=14, batch_size=2, seed=0, rank=rank, world=3)
        sampler.set_epoch(1)
        shards.append([k for b in sampler for k in b])
        assert len(sampler) == sampler.batches_per_epoch == 2
    indices = [k.index for shard in shards for k in shard]
    assert len(indices) == len(set(indices)) == 12
    # an item's seed does not depend on the rank that draws it
    assert all(k.seed == item_seed(0, 1, k.index) for shard in shards for k in shard)
    with pytest.raises(ConfigError, match="cannot make a batch"):
        EpochBatchSampler(num_items=5, batch_size=2, seed=0, world=3)


def test_item_seeds_differ_across_epochs_and_indices():
    seeds = {item_seed(0, epoch, index) for epoch in range(20) for index in range(2000)}
    assert len(seeds) == 40_000 and all(0 <= s < 2**63 for s in seeds)
    assert item_seed(1, 0, 0) != item_seed(0, 0, 0)


def test_num_workers_auto_and_errors(monkeypatch):
    monkeypatch.setattr("cpabanim.data.loader.available_cpus", lambda: 32)
    assert resolve_num_workers("auto") == 8 and resolve_num_workers("auto", local_world=8) == 4
    monkeypatch.setattr("cpabanim.data.loader.available_cpus", lambda: 1)
    assert resolve_num_workers("auto") == 1 and resolve_num_workers(0) == 0 and resolve_num_workers(3) == 3
    for bad in (-1, "many", True):
        with pytest.raises(ConfigError, match="num_workers"):
            resolve_num_workers(bad)


def test_loader_batches_do_not_depend_on_the_workers(tmp_path):
    for i in range(5):
        write_frame_folder(tmp_path / "train" / f"clip{i}", moving_square_video(4, 24, seed=i))
    dataset = FramesDataset(
        tmp_path,
        "train",
        num_repeats=2,
        augmentation={"horizontal_flip": True, "time_flip": True, "jitter": {"brightness": 0.3, "hue": 0.2}},
    )
    runs = []
    for workers in (0, 2):
        sampler = EpochBatchSampler(len(dataset), batch_size=3, seed=7)
        loader = make_loader(dataset, sampler, workers, torch.device("cpu"))
        batches = []
        for epoch in (0, 1):  # persistent workers across epochs
            sampler.set_epoch(epoch)
            batches += list(loader)
        runs.append(batches)
        assert not loader.pin_memory and loader.persistent_workers == (workers > 0)
    assert len(runs[0]) == len(runs[1]) == 6
    for a, b in zip(*runs):
        assert a["name"] == b["name"] and a["source"].shape == (3, 3, 24, 24)
        assert torch.equal(a["source"], b["source"]) and torch.equal(a["driving"], b["driving"])
    assert not torch.equal(runs[0][0]["source"], runs[0][3]["source"])


def test_collate_and_to_device():
    items = [
        {"source": torch.rand(3, 4, 4), "mask": torch.zeros(4, 4, dtype=torch.int64), "name": f"v{i}"} for i in range(2)
    ]
    batch = collate(items)
    assert batch["source"].shape == (2, 3, 4, 4) and batch["name"] == ["v0", "v1"]
    moved = to_device(batch, torch.device("cpu"), channels_last=True)
    assert moved["source"].is_contiguous(memory_format=torch.channels_last)
    assert moved["mask"].dtype == torch.int64 and moved["name"] == ["v0", "v1"]
    assert ItemKey(3, 9).index == 3


def test_frames_cross_as_uint8_and_become_float_on_the_device():
    frames = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    moved = to_device({"source": frames, "mask": torch.zeros(2, 4, 4, dtype=torch.int64)}, torch.device("cpu"))
    assert moved["source"].dtype == torch.float32 and torch.equal(moved["source"] * 255, frames.float())
    assert moved["mask"].dtype == torch.int64


def test_pack_uint8_rounds_to_the_nearest_level():
    from cpabanim.data.augmentation import pack_uint8

    values = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 1.0, 1.2, -0.1])
    assert pack_uint8(values).tolist() == [0, 0, 1, 255, 255, 0]
    frames = torch.rand(2, 3, 8, 8)
    assert (pack_uint8(frames).float() / 255 - frames).abs().max() <= 0.5 / 255 + 1e-7
