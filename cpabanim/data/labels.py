"""Reading the region label maps ``cpabanim masks`` wrote (:mod:`cpabanim.data.masks`), for the training loader: the
masks' index, and the label maps of the frames an item draws. Apart from the masks stage, so that training runs (and
depends on) none of SAM's code."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpabanim import files
from cpabanim.errors import DataError

MASKS_INDEX = "meta.json"  # the masks' index (the gather): source, settings, each video's file and frame count


def mask_files(masks_root: str | Path, split: str) -> dict[str, Path]:
    """``{video: its masks file}`` of a split: the archives the masks' index lists, else the ``<split>/<name>.npz``
    files of a mask folder made by hand (read once: a training loader looks videos up here)."""
    root = Path(masks_root)
    entries = ((files.read_json(root / MASKS_INDEX, corrupt_ok=True).get("videos") or {}).get(split)) or {}
    if entries and all(isinstance(e, dict) and "file" in e for e in entries.values()):
        return {name: files.contained_path(root, entry["file"]) for name, entry in entries.items()}
    folder = root / split
    return {p.stem: p for p in sorted(folder.glob("*.npz"))} if folder.is_dir() else {}


def mask_frames(path: Path, indices: list[int]) -> np.ndarray:
    """uint8 (len(indices), H, W) region labels of frames ``indices`` of one video's masks file (:func:`mask_files`):
    from an archive only those frames are decoded; an ``.npz`` is read whole."""
    from cpabanim.data import archive

    if path.suffix == archive.SUFFIX:
        with archive.FrameArchive(path) as labels:
            record = labels.record or {}
            every, frames = int(record.get("every", 1)), int(record.get("frames", len(labels)))
            if max(indices) >= frames:
                raise DataError(f"{path}: masks of {frames} frames, frame {max(indices)} was asked for")
            # masks.every = k: the nearest frame with masks (half-way: the later one)
            return np.stack([labels.image(min(int(i / every + 0.5), len(labels) - 1)) for i in indices])
    with np.load(path) as data:
        labels = data["labels"]
    if max(indices) >= len(labels):
        raise DataError(f"{path}: masks of {len(labels)} frames, frame {max(indices)} was asked for")
    return labels[indices]
