"""The files the report's video page shows, copied beside it (:mod:`cpabanim.reporting.videos`): names from data
are read only when :func:`~cpabanim.data.names.safe_name` accepts them, and every copy must resolve inside
``videos/``; a processed test video's frame is copied out of its frame archive."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cpabanim import files
from cpabanim.data.names import safe_name
from cpabanim.errors import DataError
from cpabanim.files import contained_path

VIDEOS_DIR = "videos"  # beside the page: the copies of every file it shows


def usable(name: object) -> bool:
    """Whether a name from data can be a file name here (:func:`safe_name` accepts it: no ``/``, not ``..``)."""
    with contextlib.suppress(DataError):
        return bool(safe_name(name))  # type: ignore[arg-type]
    return False


def inside(root: Path | None, *parts: object) -> Path | None:
    """``root / parts`` when each part is one :func:`usable` name (then it stays below ``root``), else None (and
    None without a root). Links are followed: the run folders are the pipeline's own (DVC may link its cache)."""
    return root.joinpath(*parts) if root is not None and all(usable(p) for p in parts) else None  # type: ignore


def frames_of(folder: Path | None) -> list[Path]:
    """The PNG frames of a frame folder in order (none when it is not a folder)."""
    return sorted(folder.glob("*.png")) if folder is not None and folder.is_dir() else []


@dataclass(frozen=True)
class Member:
    """Frame ``index`` of a frame archive (a processed test video), copied as its PNG bytes."""

    archive: Path
    index: int
    suffix: str = ".png"


def test_frames(tests: dict[str, Path], video: object) -> list[Path | Member]:
    """The frames of the processed test video ``video`` (``tests``: name -> file), in order; none when unknown."""
    from cpabanim.data import archive

    path = tests.get(video) if isinstance(video, str) and usable(video) else None
    if path is None or not archive.is_archive(path):
        return frames_of(path)
    try:
        with archive.FrameArchive(path) as frames:
            return [Member(path, i) for i in range(len(frames))]
    except DataError:
        return []


class Copier:
    """Copies a file to ``<page folder>/videos/<parts><its suffix>``, each part through :func:`safe_name` and the
    target checked to stay inside the folder; returns its URL relative to the page. Starts with the folder empty
    (an output folder of the report: one holding files cpabanim did not write is refused, never cleared)."""

    def __init__(self, page: Path):
        self.base, self.root, self.files = page.parent, page.parent / VIDEOS_DIR, []
        self.base.mkdir(parents=True, exist_ok=True)
        if self.root.is_symlink():  # files of an earlier page must not linger, nor a link lead elsewhere
            self.root.unlink()
        files.fresh_output_folder(self.root, "cpabanim report")

    def copy(self, source: Path | Member, *parts: str) -> str:
        target = contained_path(self.root, *(safe_name(p) for p in parts[:-1]), safe_name(parts[-1] + source.suffix))
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Member):
            from cpabanim.data.archive import FrameArchive

            with FrameArchive(source.archive) as frames:
                target.write_bytes(frames.png(source.index))
        else:
            shutil.copyfile(source, target)
        self.files.append(target)
        return quote(target.relative_to(self.base).as_posix())
