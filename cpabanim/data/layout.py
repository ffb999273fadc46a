"""Where a processed dataset's videos are: shards, the index, and the one way every reader lists a split
(docs/data.md, "Storage").

A sharded stage (``preprocess``, ``masks``) writes ``<root>/shards/<kkk>/`` per shard job and a small gather step
writes ``<root>/<index file>`` listing every video of each split with its file (``shards/002/train/<name>.zip``).
A video's shard is a hash of its name (:func:`shard_of`): the same name lands in the same shard on any machine and
in any run, and adding videos moves none of those already there (only a new shard count does).

Readers never list the shard folders: :func:`split_videos` reads the index. A folder without one (a dataset laid
out by hand, a copy in the field's ``train/``, ``test/`` layout, a test's fixture) is listed as it is.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

from cpabanim import files
from cpabanim.errors import DataError

SHARDS_FOLDER = "shards"
SHARD_MARKER = "done.json"  # a shard's record, written last: the shard job is complete when it exists
MANIFEST = "manifest.json"  # the processed dataset's index (preprocess's gather)
SPLITS = ("train", "test")
# the data keys that define the processed videos: what preprocess reads (its declaration) and what a video's
# archive records it was made with (a resumed shard reuses it only for the same values)
VIDEO_KEYS = ("seed", "source", "frame_size", "synthetic", "folder", "metadata", "source_dir")


def shard_of(name: str, count: int) -> int:
    """The shard (0 .. count - 1) of the video ``name``: the first 8 bytes of its sha256, modulo ``count``."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def shard_name(index: int) -> str:
    """``002``: a shard's folder name and its job's wildcard (three digits: up to 1000 shards)."""
    return f"{index:03d}"


def shard_folder(root: str | Path, index: int) -> Path:
    return Path(root) / SHARDS_FOLDER / shard_name(index)


def is_shard_name(name: str) -> bool:
    """Whether ``name`` is what a folder of shard folders may hold: ``002`` (a shard's) or cpabanim's mark."""
    return bool(re.fullmatch(r"[0-9]{3}", name)) or name == files.OWNER_FILE


def claim_shard(shards_root: str | Path, index: int, writer: str) -> Path:
    """``<shards_root>/<kkk>``, the folder of shard ``index`` of a per-experiment stage (whose shard folders sit
    directly in ``shards_root``), claimed for ``writer`` after checking that ``shards_root`` holds shards only."""
    files.check_output_folder(shards_root, own=is_shard_name)
    return files.claim_output_folder(Path(shards_root) / shard_name(index), writer)


def remove_other_shards(shards_root: str | Path, count: int) -> None:
    """Remove the shard folders of ``shards_root`` beyond ``count`` (an earlier, larger shard count): their records
    would otherwise sit beside the current ones."""
    root = Path(shards_root)
    for folder in root.iterdir() if root.is_dir() else []:
        if folder.name != files.OWNER_FILE and (not folder.name.isdigit() or int(folder.name) >= count):
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()


def claim_shard_folder(root: str | Path, index: int, index_files: tuple[str, ...], writer: str) -> Path:
    """The folder of shard ``index`` under ``root``, claimed for ``writer`` (``files.claim_output_folder``), after
    checking that ``root`` holds nothing but shards and the ``index_files`` (never a folder of the user's).
    ``root`` itself carries no mark: its parts are the shard jobs' and the gather's outputs, each restored alone by
    ``dvc pull``."""
    files.check_output_folder(root, own=lambda name: name in (SHARDS_FOLDER, *index_files, files.OWNER_FILE))
    return files.claim_output_folder(shard_folder(root, index), writer)


def check_shard(index: int, count: int, key: str) -> None:
    if not 0 <= index < count:
        raise DataError(f"shard {index} does not exist: {key} = {count} gives shards 0 to {count - 1}")


def read_shard_record(root: str | Path, index: int, count: int, config: Any, stage: str) -> dict[str, Any]:
    """The record shard ``index`` wrote when it finished, for ``config``; a :class:`DataError` naming the command to
    run when the shard is missing, unfinished or was made with another config."""
    return read_record(shard_folder(root, index), index, count, config, stage)


def read_record(folder: str | Path, index: int, count: int, config: Any, stage: str) -> dict[str, Any]:
    """:func:`read_shard_record` of the shard whose folder is ``folder`` (a per-experiment stage's: ``stage`` is the
    command that makes it, ``reconstruct --experiment tps --set seed=1``)."""
    path = Path(folder) / SHARD_MARKER
    record = files.read_json(path, corrupt_ok=True)
    if not record:
        raise DataError(f"{path}: shard {index} of {count} is not done: run `cpabanim {stage} --shard {index}`")
    if record.get("config") != config or record.get("shards") != count:
        raise DataError(
            f"{path}: shard {index} was made with other parameters: run `cpabanim {stage} --shard {index}` again"
        )
    return record


def split_videos(root: str | Path, split: str, index_file: str = MANIFEST) -> dict[str, Path]:
    """``{video name: path}`` of one split, sorted by name: from ``root/index_file``'s ``videos[split]`` when it has
    files (a sharded dataset), else every video ``root/split`` holds (frame folders, archives, movies)."""
    from cpabanim.data.video import is_video

    root = Path(root)
    index = files.read_json(root / index_file, corrupt_ok=True) if (root / index_file).is_file() else {}
    entries = (index.get("videos") or {}).get(split)
    if entries and all(isinstance(e, dict) and "file" in e for e in entries.values()):
        return {name: files.contained_path(root, entries[name]["file"]) for name in sorted(entries)}
    folder = root / split
    if not folder.is_dir():
        raise DataError(f"{folder}: no '{split}' folder and no index (run `cpabanim preprocess` first)")
    found = (p for p in folder.iterdir() if not p.name.startswith(".") and not p.name.endswith(".tmp") and is_video(p))
    return {video_name(p): p for p in sorted(found, key=video_name)}


def video_name(path: Path) -> str:
    """A video's name: a folder's name (dots and all: ``id10001.7w0IBEWc9Qw.000993.001143``), or a file's name
    without its suffix (``clip.v2.mp4`` -> ``clip.v2``, ``a.b.zip`` -> ``a.b``)."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def video_path(root: str | Path, split: str, name: str) -> Path:
    """The path of the video ``name`` of a split; a :class:`DataError` when the split has no such video."""
    videos = split_videos(root, split)
    if name not in videos:
        raise DataError(f"{Path(root)}: the {split} split has no video {name!r} (re-run `cpabanim preprocess`?)")
    return videos[name]
