"""``FramesDataset``: the field's (FOMM / TPSMM) training dataset over ``root/{train,test}/<video>``.

A ``<video>`` is a folder of frames (what ``cpabanim preprocess`` writes), an .mp4/.gif, or a wide PNG strip.
Training items draw two frames of one video uniformly with replacement and sort them (source first).
With ``id_sampling`` an item is an *identity* (the part of the video name before ``#``) and the video is
drawn among that identity's clips, so identities with many clips do not dominate an epoch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from cpabanim.data.augmentation import augment_pair
from cpabanim.data.video import is_video, list_frame_files, read_video, _read_image
from cpabanim.errors import DataError


def video_name(path: Path) -> str:
    """A video's name: the folder or file name without a movie/image suffix."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def list_videos(root: str | Path, split: str) -> list[Path]:
    """Every video under ``root/split`` (sorted), or a :class:`DataError` saying what is missing."""
    folder = Path(root) / split
    if not folder.is_dir():
        raise DataError(f"{folder}: no '{split}' folder (run `cpabanim preprocess` first)")
    videos = sorted(p for p in folder.iterdir() if not p.name.endswith(".tmp") and is_video(p))
    if not videos:
        raise DataError(f"{folder}: no videos")
    return videos


def load_masks(masks_root: str | Path, split: str, name: str) -> np.ndarray:
    """uint8 (T, H, W) region labels of one video, written by ``cpabanim masks``."""
    path = Path(masks_root) / split / f"{name}.npz"
    if not path.is_file():
        raise DataError(f"{path}: no region masks for video {name!r} (run `cpabanim masks`)")
    with np.load(path) as data:
        return data["labels"]


class FramesDataset(Dataset):
    """Pairs (train) or whole videos (test) from ``root/split``.

    Train items: ``{"source", "driving": float32 (3, H, W) in [0, 1], "name": str}`` and, with ``masks_root``,
    ``{"source_mask", "driving_mask": int64 (H, W)}``. Test items (``split="test"``): ``{"video": float32
    (T, 3, H, W), "name": str}``. Randomness (frame choice, augmentation) uses torch's global generator.
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
                groups.setdefault(video_name(video).split("#")[0], []).append(video)
            self.groups = [groups[key] for key in sorted(groups)]
        else:
            self.groups = [[video] for video in self.videos]

    def __len__(self) -> int:
        return len(self.groups) * self.num_repeats

    def __getitem__(self, index: int) -> dict[str, Any]:
        group = self.groups[index % len(self.groups)]
        video = group[int(torch.randint(len(group), ()))] if len(group) > 1 else group[0]
        if self.split == "test":
            frames = self._check_shape(read_video(video, self.frame_shape), video)
            return {"video": torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255), "name": video_name(video)}
        return self._pair(video)

    def _pair(self, video: Path) -> dict[str, Any]:
        name = video_name(video)
        if video.is_dir():  # read only the two frames drawn
            files = list_frame_files(video)
            picks = sorted(torch.randint(len(files), (2,)).tolist())
            frames = np.stack([_read_image(files[i]) for i in picks])
        else:
            all_frames = read_video(video, self.frame_shape)
            picks = sorted(torch.randint(len(all_frames), (2,)).tolist())
            frames = all_frames[picks]
        frames = self._check_shape(frames, video)
        pair = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)
        masks = None
        if self.masks_root is not None:
            labels = load_masks(self.masks_root, self.split, name)
            if labels.shape[1:] != frames.shape[1:3] or max(picks) >= len(labels):
                raise DataError(
                    f"masks of {name!r} have shape {labels.shape}, frames are {frames.shape[1:3]} x >{max(picks)}: "
                    "re-run `cpabanim masks` after preprocessing"
                )
            masks = torch.from_numpy(labels[picks].astype(np.int64))
        pair, masks = augment_pair(pair, masks, self.augmentation)
        item = {"source": pair[0].contiguous(), "driving": pair[1].contiguous(), "name": name}
        if masks is not None:
            item["source_mask"], item["driving_mask"] = masks[0].contiguous(), masks[1].contiguous()
        return item

    def _check_shape(self, frames: np.ndarray, video: Path) -> np.ndarray:
        if self.frame_shape and frames.shape[1:3] != tuple(self.frame_shape[:2]):
            raise DataError(f"{video}: frames are {frames.shape[1:3]}, the dataset expects {self.frame_shape[:2]}")
        return frames


def iter_videos(root: str | Path, split: str = "test") -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, uint8 (T, H, W, 3))`` for every video of a split, in sorted order (reconstruction)."""
    for video in list_videos(root, split):
        yield video_name(video), read_video(video)


def dataset_from_params(params: dict[str, Any], split: str = "train", with_masks: bool = False) -> FramesDataset:
    """The dataset the pipeline trains/evaluates on, as configured in params.yaml."""
    data = params["data"]
    size = int(data["frame_size"])
    return FramesDataset(
        params["paths"]["processed"], split=split, frame_shape=(size, size, 3),
        id_sampling=data.get("id_sampling", False), augmentation=data.get("augmentation"),
        num_repeats=data.get("num_repeats", 1), masks_root=params["paths"]["masks"] if with_masks else None,
    )
