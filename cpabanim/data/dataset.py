"""``FramesDataset``: the field's (FOMM / TPSMM) training dataset over ``root/{train,test}/<video>``.

A ``<video>`` is a folder of frames (what ``cpabanim preprocess`` writes), an .mp4/.gif, or a wide PNG strip.
Training items draw two frames of one video uniformly with replacement and sort them (source first).
With ``id_sampling`` an item is an *identity* (the part of the video name before the first ``.``,
:func:`cpabanim.data.names.identity`) and the video is drawn among that identity's clips, so identities with many
clips do not dominate an epoch.

Every random draw of an item (clip, frames, augmentation parameters) comes from one ``torch.Generator``:
:meth:`FramesDataset.sample` takes it explicitly, and indexing with an :class:`~cpabanim.data.loader.ItemKey`
seeds it from the key (what the training loader does), so an item is the same in any worker, any process
and after a resume (docs/model.md, "Determinism and resume"). Frames are decoded straight into uint8
tensors (OpenCV), augmented as tensors and handed on as uint8.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cpabanim.data import archive
from cpabanim.data.augmentation import apply_augmentation, pack_uint8, sample_augmentation
from cpabanim.data.labels import mask_files, mask_frames
from cpabanim.data.layout import split_videos, video_name
from cpabanim.data.loader import ItemKey, item_generator
from cpabanim.data.names import identity
from cpabanim.data.video import list_frame_files, read_image, read_video
from cpabanim.errors import DataError

LISTINGS_KEPT = 1024  # frame-folder listings a loader worker keeps (about 1 MB for 256-frame videos)


def list_videos(root: str | Path, split: str) -> list[Path]:
    """Every video of ``root``'s split, sorted by name (the processed index, or the folder's videos:
    :func:`cpabanim.data.layout.split_videos`), or a :class:`DataError` saying what is missing."""
    videos = list(split_videos(root, split).values())
    if not videos:
        raise DataError(f"{Path(root) / split}: no videos")
    return videos


def read_frame(path: Path) -> torch.Tensor:
    """One frame image -> uint8 (3, H, W) RGB.

    OpenCV: measured as cheap as ``torchvision.io`` (whose image decoding is deprecated since torchvision
    0.29) and cheaper than PIL: a 256 px PNG pair decoded and stacked in 3.6 / 3.7 / 5.8 ms on one loaded
    core. Other files (grayscale, 16-bit, unreadable) go through :func:`~cpabanim.data.video.read_image`,
    the rule every reader follows (converted to RGB, or a :class:`DataError` naming the file).
    """
    cv2 = _opencv()
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        return torch.from_numpy(read_image(path).copy()).permute(2, 0, 1)
    code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB
    return torch.from_numpy(cv2.cvtColor(image, code)).permute(2, 0, 1)


@functools.cache
def _opencv():
    """cv2 with its own thread pool off: the loader's workers are the parallelism, and a pool started before
    a fork is unusable in the forked workers."""
    import cv2

    cv2.setNumThreads(0)
    return cv2


class FramesDataset(Dataset):
    """Pairs (train) or whole videos (test) from ``root/split``.

    Train items: ``{"source", "driving": uint8 (3, H, W), "name": str}`` (``cpabanim.data.loader.to_device``
    turns them into float32 in [0, 1] on the training device) and, with ``masks_root``,
    ``{"source_mask", "driving_mask": int64 (H, W)}``. Test items (``split="test"``): ``{"video": float32
    (T, 3, H, W), "name": str}``. ``dataset[ItemKey(index, seed)]`` draws from a generator seeded with
    ``seed``; ``dataset[index]`` draws from torch's global generator.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        frame_shape: Sequence[int] | None = None,
        id_sampling: bool = False,
        augmentation: dict[str, Any] | None = None,
        num_repeats: int = 1,
        masks_root: str | Path | None = None,
    ):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        self.root, self.split = Path(root), split
        self.frame_shape = tuple(frame_shape) if frame_shape else None
        self.videos = list_videos(root, split)
        self.augmentation = augmentation if split == "train" else None
        self.num_repeats = max(1, int(num_repeats)) if split == "train" else 1
        self.masks_root = Path(masks_root) if masks_root else None
        self.id_sampling = bool(id_sampling) and split == "train"
        if self.id_sampling:
            groups: dict[str, list[Path]] = {}
            for video in self.videos:
                groups.setdefault(identity(video_name(video)), []).append(video)
            self.groups = [groups[key] for key in sorted(groups)]
        else:
            self.groups = [[video] for video in self.videos]
        self.masks = mask_files(masks_root, split) if masks_root else None
        self._frame_files: OrderedDict[Path, list[Path]] = OrderedDict()  # frame folders' listings, bounded

    def __len__(self) -> int:
        return len(self.groups) * self.num_repeats

    def __getitem__(self, key: int | ItemKey) -> dict[str, Any]:
        if isinstance(key, ItemKey):
            return self.sample(key.index, item_generator(key))
        return self.sample(int(key))

    def sample(self, index: int, generator: torch.Generator | None = None) -> dict[str, Any]:
        """Item ``index`` with every random draw from ``generator`` (None: torch's global generator)."""
        group = self.groups[index % len(self.groups)]
        video = group[int(torch.randint(len(group), (), generator=generator))] if len(group) > 1 else group[0]
        if self.split == "test":
            frames = self._check_shape(read_video(video, self.frame_shape), video)
            return {"video": torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255), "name": video_name(video)}
        return self._pair(video, generator)

    def frame_files(self, video: Path) -> list[Path]:
        """The frame files of a frame-folder video, listed once per process for the last :data:`LISTINGS_KEPT` videos
        (a worker drawing every video of a large dataset holds no more)."""
        if video in self._frame_files:
            self._frame_files.move_to_end(video)
        else:
            self._frame_files[video] = list_frame_files(video)
            if len(self._frame_files) > LISTINGS_KEPT:
                self._frame_files.popitem(last=False)
        return self._frame_files[video]

    def _pair(self, video: Path, generator: torch.Generator | None) -> dict[str, Any]:
        """Two frames drawn uniformly with replacement, sorted, with their masks, augmented as a pair."""
        name = video_name(video)
        picks, pair = self._two_frames(video, generator)
        self._check_shape_hw(tuple(pair.shape[-2:]), video)
        masks = None
        if self.masks is not None:
            if name not in self.masks:
                raise DataError(f"{self.masks_root}: no region masks for video {name!r} (run `cpabanim masks`)")
            labels = mask_frames(self.masks[name], picks)
            if labels.shape[1:] != tuple(pair.shape[-2:]):
                raise DataError(
                    f"masks of {name!r} are {labels.shape[1:]}, frames are {tuple(pair.shape[-2:])}: "
                    "re-run `cpabanim masks` after preprocessing"
                )
            masks = torch.from_numpy(labels.astype(np.int64))
        aug = sample_augmentation(self.augmentation, tuple(pair.shape[-2:]), generator)
        pair, masks = apply_augmentation(pair, masks, aug)
        pair = pack_uint8(pair)  # the trainer's to_device makes them float on the device
        item = {"source": pair[0].contiguous(), "driving": pair[1].contiguous(), "name": name}
        if masks is not None:
            item["source_mask"], item["driving_mask"] = masks[0].contiguous(), masks[1].contiguous()
        return item

    def _two_frames(self, video: Path, generator: torch.Generator | None) -> tuple[list[int], torch.Tensor]:
        """Two frame indices drawn uniformly with replacement, sorted, and those frames, uint8 (2, 3, H, W): only
        those two are decoded from an archive or a frame folder (a movie is read whole)."""

        def draw(count: int) -> list[int]:
            return sorted(torch.randint(count, (2,), generator=generator).tolist())

        if video.suffix == archive.SUFFIX:
            with archive.FrameArchive(video) as stored:
                picks = draw(len(stored))
                images = [stored.image(i) for i in picks]
            rgb = [im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2) for im in images]  # gray: one rule
            frames = [torch.from_numpy(np.ascontiguousarray(im[..., :3])).permute(2, 0, 1) for im in rgb]
        elif video.is_dir():
            files = self.frame_files(video)
            picks = draw(len(files))
            frames = [read_frame(files[i]) for i in picks]
        else:
            all_frames = read_video(video, self.frame_shape)
            picks = draw(len(all_frames))
            return picks, torch.from_numpy(np.ascontiguousarray(all_frames[picks])).permute(0, 3, 1, 2)
        if frames[0].shape != frames[1].shape:
            raise DataError(
                f"{video}: frames of different sizes ({tuple(frames[0].shape[1:])} and {tuple(frames[1].shape[1:])})"
            )
        return picks, torch.stack(frames)

    def _check_shape_hw(self, shape: tuple[int, int], video: Path) -> None:
        if self.frame_shape and shape != tuple(self.frame_shape[:2]):
            raise DataError(f"{video}: frames are {shape}, the dataset expects {self.frame_shape[:2]}")

    def _check_shape(self, frames: np.ndarray, video: Path) -> np.ndarray:
        self._check_shape_hw(tuple(frames.shape[1:3]), video)
        return frames


def iter_videos(root: str | Path, split: str = "test") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, uint8 (T, H, W, 3))`` for every video of a split, in sorted order (reconstruction)."""
    for video in list_videos(root, split):
        yield video_name(video), read_video(video)
