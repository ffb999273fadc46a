"""The training input pipeline: seeded item keys, an epoch batch sampler and the ``DataLoader`` factory.

Determinism (docs/model.md, "Determinism and resume"):

* the items of an epoch are a permutation seeded by (seed, epoch); with ``world`` processes rank r takes
  every world-th item, as ``DistributedSampler`` does; the rank's items are cut into full batches;
* every item carries its own seed, derived from (seed, epoch, index) alone, and the dataset draws all of
  the item's randomness (frames, augmentation) from a ``torch.Generator`` seeded with it.

A batch therefore depends only on (seed, epoch, batch index, rank, world): not on the number of workers,
on which worker builds it, nor on whether the run was resumed (:meth:`EpochBatchSampler.set_epoch` starts
an epoch at any batch).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from cpabanim.errors import ConfigError

MAX_AUTO_WORKERS = 8


class ItemKey(NamedTuple):
    """What the sampler hands the dataset: the item's index and the seed of its own generator."""

    index: int
    seed: int


def step_seed(seed: int, step: int) -> int:
    """The trainer's per-step seed (model-side randomness: transform dropout, equivariance TPS)."""
    return (seed * 1_000_003 + step * 7919 + 17) % (2**63 - 1)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for item ``index`` of ``epoch``: a hash, so no two (epoch, index) pairs share it."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def item_generator(key: ItemKey) -> torch.Generator:
    """The CPU generator every random draw of one item comes from."""
    return torch.Generator().manual_seed(key.seed)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> list[int]:
    """The order of the items in ``epoch`` (the same for every rank)."""
    generator = torch.Generator().manual_seed(step_seed(seed, 1_000_000 + epoch))
    return torch.randperm(num_items, generator=generator).tolist()


def epoch_order(num_items: int, seed: int, epoch: int, rank: int, world: int, batch_size: int) -> list[list[int]]:
    """The batches (item indices) of one epoch for this rank: the (seed, epoch) permutation, split across
    ranks like DistributedSampler (rank r takes items r, r + world, ...), cut into full batches (drop_last)."""
    per_rank = epoch_permutation(num_items, seed, epoch)[rank::world][: num_items // world]
    count = len(per_rank) // batch_size
    return [per_rank[i * batch_size : (i + 1) * batch_size] for i in range(count)]


class EpochBatchSampler(Sampler[list[ItemKey]]):
    """Batches of :class:`ItemKey` for one epoch of one rank, from batch ``start`` on (a resumed epoch).

    Call :meth:`set_epoch` before each ``iter(loader)``; the sampler lives in the main process, so this works
    with persistent workers.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size < 1 or num_items < batch_size * world:
            raise ConfigError(f"{num_items} items cannot make a batch of {batch_size} on each of {world} processes")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.world // self.batch_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Make the next iteration yield ``epoch``'s batches ``start``, ``start + 1``, ..."""
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start)

    def __iter__(self) -> Iterator[list[ItemKey]]:
        batches = epoch_order(self.num_items, self.seed, self.epoch, self.rank, self.world, self.batch_size)
        for batch in batches[self.start :]:
            yield [ItemKey(index, item_seed(self.seed, self.epoch, index)) for index in batch]


class KeyedDataset(Dataset):
    """Serves ``dataset`` by :class:`ItemKey`: ``dataset.sample(index, generator)`` when the dataset has it (all
    its randomness from the item's generator), else ``dataset[index]`` (a dataset without randomness)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: ItemKey) -> dict[str, Any]:
        return load_item(self.dataset, key)


def load_item(dataset: Dataset, key: ItemKey) -> dict[str, Any]:
    """One item of ``dataset`` drawn with the key's own generator (see :class:`KeyedDataset`)."""
    sample = getattr(dataset, "sample", None)
    return sample(key.index, item_generator(key)) if sample is not None else dataset[key.index]


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Items -> a batch: tensors and arrays stacked on a new first axis, strings kept as a list.

    ``default_collate``: in a worker it stacks straight into shared memory, saving the copy that sending an
    ordinary tensor to the training process would make.
    """
    return default_collate(list(items))


def to_device(batch: dict[str, Any], device: torch.device, channels_last: bool = False) -> dict[str, Any]:
    """Move a batch's tensors to ``device`` (non-blocking: the loader pins host memory on CUDA).

    4-d uint8 tensors (the frames, (B, 3, H, W)) cross as uint8 and become float32 in [0, 1] on the device;
    4-d float tensors are optionally put in channels_last layout.
    """
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if value.ndim == 4 and value.dtype == torch.uint8:
                value = value.float().div_(255)
            if channels_last and value.ndim == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a SLURM allocation), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_num_workers(value: int | str, local_world: int = 1) -> int:
    """``train.num_workers``: an integer >= 0 as given, or ``auto`` = min(CPUs / processes on this node, 8)."""
    if value == "auto":
        return max(1, min(MAX_AUTO_WORKERS, available_cpus() // max(1, local_world)))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"train.num_workers must be an integer >= 0 or 'auto', got {value!r}")
    return value


def make_loader(
    dataset: Dataset, sampler: Sampler[list[ItemKey]], num_workers: int, device: torch.device, prefetch_factor: int = 2
) -> DataLoader:
    """The training DataLoader: keyed items from ``num_workers`` persistent workers (0 = the main process),
    each prefetching ``prefetch_factor`` batches, in pinned memory when the model is on CUDA. ``sampler``: an
    :class:`EpochBatchSampler`, or any batch sampler of :class:`ItemKey` living in the main process (the avd
    stage's, cpabanim/training/avd.py)."""
    workers = num_workers > 0
    return DataLoader(
        KeyedDataset(dataset),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        persistent_workers=workers,
        prefetch_factor=prefetch_factor if workers else None,
    )
