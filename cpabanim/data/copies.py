"""A copy of a dataset in the field's layout (``train/``, ``test/`` of frame folders, movies, gifs or strips), as
people have them (docs/data.md, "Bring your own copy"): a folder, read in place; a zip, read in place (each frame
or movie is read out of it, nothing unpacked); a tar (``.tar``, ``.tar.gz``...), which has no index to read one
member without the ones before, unpacked once by ``download`` into ``{paths.raw}/<source>/copy`` (safely:
:func:`cpabanim.data.sources.unpack_archive`) and then read as a folder.
"""

from __future__ import annotations

import functools
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import numpy as np

from cpabanim.data import archive
from cpabanim.data.video import FRAME_SUFFIXES, read_image_bytes, read_video
from cpabanim.errors import DataError

SPLITS = ("train", "test")
UNPACKED = "copy"  # the folder of {paths.raw}/<source>/ a tar copy is unpacked into


def is_zip(path: Path) -> bool:
    return Path(path).is_file() and zipfile.is_zipfile(path)


def is_tar(path: Path) -> bool:
    return Path(path).is_file() and not is_zip(path) and tarfile.is_tarfile(path)


def copy_location(source_dir: str | Path, raw_root: Path, source: str) -> Path:
    """Where preprocess reads the copy ``data.source_dir`` names: itself (a folder or a zip), or the folder
    ``download`` unpacked a tar into."""
    path = Path(source_dir)
    if is_tar(path):
        unpacked = raw_root / source / UNPACKED
        if not unpacked.is_dir():
            raise DataError(f"{path} is a tar: run `cpabanim download` first (it unpacks it into {unpacked})")
        return unpacked
    return path


@functools.lru_cache(maxsize=2)
def _open_zip(path: str, size: int, mtime_ns: int) -> zipfile.ZipFile:
    """One open zip per process and file version: its central directory is read once (Python holds about 0.5 KB a
    member: a zip of VoxCeleb's 4.1 M frame files costs each shard job about 2 GB; unzip such a copy, or tar it)."""
    return zipfile.ZipFile(path)


def open_zip(path: Path) -> zipfile.ZipFile:
    stat = Path(path).stat()
    return _open_zip(str(path), stat.st_size, stat.st_mtime_ns)


def zip_videos(path: Path) -> dict[str, dict[str, list[str]]]:
    """``{split: {entry: [members]}}`` of a zip in the field's layout: an entry is a frame folder (its frame members,
    in name order) or one movie, gif or strip file; ``train/`` and ``test/`` may sit below a top folder."""
    names = [n for n in open_zip(path).namelist() if not n.endswith("/")]
    prefixes = {
        "/".join(parts[:i])
        for parts in (PurePosixPath(n).parts for n in names)
        for i, part in enumerate(parts)
        if part == "train"
    }
    tops = sorted((p for p in prefixes if any(n.startswith(_join(p, "test/")) for n in names)), key=len)
    if not tops:
        raise DataError(f"{path}: no folder with train/ and test/ inside (expected the FOMM/TPSMM layout)")
    videos: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    for split in SPLITS:
        base = _join(tops[0], f"{split}/")
        for name in sorted(n for n in names if n.startswith(base)):
            parts = name[len(base) :].split("/")
            not_a_frame = len(parts) > 1 and PurePosixPath(name).suffix.lower() not in FRAME_SUFFIXES
            if parts[0].startswith(".") or not_a_frame:
                continue  # hidden entries, and files in a folder that are not frames (notes)
            videos[split].setdefault(parts[0], []).append(name)
    return videos


def _join(prefix: str, rest: str) -> str:
    return f"{prefix}/{rest}" if prefix else rest


def read_zip_video(path: Path, entry: str, members: list[str], size: int, shrink: Callable) -> np.ndarray | list[bytes]:
    """One video of a zip copy: a frame folder's PNG bytes as they are when each is an 8-bit RGB PNG of ``size``
    (what preprocessing would write), else its frames decoded and shrunk; a movie or gif read through a temporary
    file (decoders read files), removed after."""
    zf = open_zip(path)
    if len(members) == 1 and members[0].rsplit("/", 1)[-1] == entry:  # a file, not a folder
        with tempfile.NamedTemporaryFile(suffix=PurePosixPath(entry).suffix, prefix=".cpabanim-copy-") as handle:
            handle.write(zf.read(members[0]))
            handle.flush()
            return read_video(Path(handle.name), shrink=shrink)
    data = [zf.read(member) for member in members]
    if len(data) >= 2 and all(archive.is_plain_rgb_png(d, size) for d in data):
        return data
    frames = [read_image_bytes(d, f"{path}:{member}") for d, member in zip(data, members, strict=True)]
    if not frames:
        raise DataError(f"{path}:{entry}: a frame folder without frames")
    if len({f.shape for f in frames}) > 1:
        raise DataError(f"{path}:{entry}: frames of different sizes {sorted({f.shape for f in frames})}")
    return shrink(np.stack(frames))
