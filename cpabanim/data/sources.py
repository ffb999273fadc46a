"""Getting raw data: resumable checksummed downloads, archives, YouTube clips from published metadata.

Nothing here is fatal for one bad item: a dead YouTube id or a failed archive is recorded in the manifest
with its reason, and the rest goes on. Only small metadata ships with the project, never videos.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import tarfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim.data.names import safe_name
from cpabanim.errors import DataError
from cpabanim.files import CHUNK, contained_path, sha256_file, validate_id

log = logging.getLogger(__name__)


def partial_path(dest: str | Path) -> Path:
    """The resumable partial download of ``dest``: ``.<name>.part.tmp`` beside it (hidden from DVC and listings)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.part.tmp")


def fetch_url(url: str, dest: str | Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, resuming a previous partial download; verify ``sha256`` if given.

    The partial file is :func:`partial_path` (hidden, beside ``dest``, matched by .dvcignore's ``.*.tmp``): it
    stays after a failure for the next attempt to resume, and is renamed to ``dest`` once complete and checked.

    HTTP(S) resumes with a ``Range`` request (a server that ignores it answers 200 and the download restarts);
    ``file://`` URLs resume by seeking, the same logic without a network. A finished ``dest`` with the right
    checksum is not fetched again. A checksum mismatch deletes the file and raises :class:`DataError`.
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    parsed = urllib.parse.urlparse(url)
    try:
        if parsed.scheme == "file":
            source = Path(urllib.request.url2pathname(parsed.path))
            with open(source, "rb") as inp, open(part, "ab") as out:
                inp.seek(offset)
                shutil.copyfileobj(inp, out, CHUNK)
        else:
            request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                mode = "ab" if offset and response.status == 206 else "wb"
                with open(part, mode) as out:
                    shutil.copyfileobj(response, out, CHUNK)
    except OSError as err:  # URLError, HTTPError, missing file: the partial file stays for the next attempt
        raise DataError(f"download of {url} failed: {err}") from err
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink()
            raise DataError(f"{url}: sha256 {actual} does not match the expected {sha256}; the file was removed")
    os.replace(part, dest)
    return dest


def _check_zip_members(zf: zipfile.ZipFile, archive: Path, dest: Path) -> None:
    """Refuse the whole zip when one member would land outside ``dest`` (``..``, absolute name)."""
    for info in zf.infolist():
        if Path(info.filename).is_absolute():
            raise DataError(f"{archive}: member {info.filename!r} has an absolute path")
        try:
            contained_path(dest, info.filename, allow_root=True)
        except DataError:
            raise DataError(f"{archive}: member {info.filename!r} would be written outside {dest}") from None


def _check_tar_members(tf: tarfile.TarFile, archive: Path, dest: Path) -> None:
    """Refuse the whole tar when one member has an absolute name (the ``data`` filter would quietly strip the
    ``/``) or fails Python's ``data`` filter (``..``, links pointing outside, devices): checked for every
    member before anything is written."""
    for member in tf.getmembers():
        if member.name.startswith(("/", os.sep)):
            raise DataError(f"{archive}: member {member.name!r} has an absolute path")
        try:
            tarfile.data_filter(member, str(dest))
        except tarfile.FilterError as err:
            raise DataError(f"{archive}: member {member.name!r} refused ({err})") from None


def unpack_archive(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a .zip / .tar(.gz|.bz2|.xz) into ``dest``; returns ``dest``.

    Extraction goes to the hidden ``.<dest>.tmp`` beside ``dest`` (in .dvcignore) and is renamed to ``dest``
    when complete. A member that would escape (``..``, absolute path, link pointing outside), a corrupt
    archive or a failed write raises :class:`DataError` after removing the partial extraction, so no
    half-unpacked dataset is ever used.
    """
    archive, dest = Path(archive), Path(dest)
    staging = dest.with_name(f".{dest.name}.tmp")
    if staging.exists():  # left by a killed earlier run
        shutil.rmtree(staging)
    try:
        staging.mkdir(parents=True)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _check_zip_members(zf, archive, staging)
                zf.extractall(staging)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _check_tar_members(tf, archive, staging)
                tf.extractall(staging, filter="data")  # re-checks at write time (links created meanwhile)
        else:
            raise DataError(f"{archive}: not a zip or tar archive")
    except DataError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{err}; nothing was unpacked") from None
    except tarfile.FilterError as err:  # found at write time, e.g. a path through a link extracted just before
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"{archive}: member {err.tarinfo.name!r} refused ({err}); nothing was unpacked") from None
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(
            f"{archive}: cannot unpack into {dest} ({type(err).__name__}: {err}); the partial extraction was removed"
        ) from None
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    elif dest.exists() or dest.is_symlink():
        dest.unlink()
    os.replace(staging, dest)
    return dest


def find_split_root(folder: str | Path) -> Path:
    """The folder (``folder`` itself or one below it) that holds ``train/`` and ``test/``."""
    folder = Path(folder)
    for candidate in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise DataError(f"{folder}: no folder with train/ and test/ inside (expected the FOMM/TPSMM layout)")


# ---------------------------------------------------------------------------------------------------------
# Published metadata of VoxCeleb / TaiChiHD / TED-talks (AliaksandrSiarohin/video-preprocessing format)

_VIDEO_PREPROCESSING = (
    "https://raw.githubusercontent.com/AliaksandrSiarohin/video-preprocessing/ac40aac58657a3d8db85421cd4afcf465e86ead1"
)
# used when data.metadata is empty; fetched by `download` (never shipped: the repository has no licence file)
PUBLISHED_METADATA: dict[str, dict[str, str]] = {
    "vox": {
        "url": f"{_VIDEO_PREPROCESSING}/vox-metadata.csv",
        "sha256": "dfbaf55a6edaaf84add29f93692f8bb7289aff1102631bcdf1b1aaf52f3953f7",
    },
    "taichi": {
        "url": f"{_VIDEO_PREPROCESSING}/taichi-metadata.csv",
        "sha256": "1f9dcf5af96c1eb7aceb9afdf796f81668a0f8d8fc58c910369dedaab04fe12f",
    },
}


def metadata_path(source: str, metadata: str, raw_dir: Path, fetch: bool) -> Path:
    """The local metadata CSV of a YouTube source: ``metadata`` if it is a path, else fetched (a URL in
    ``metadata``, or the published file of ``source``) into ``raw_dir/metadata.csv`` when ``fetch``."""
    if metadata and "://" not in metadata:
        return Path(metadata)
    if not metadata and source not in PUBLISHED_METADATA:
        raise DataError(
            f"data.metadata is empty and no published metadata is known for {source!r}: give the CSV path "
            "(for TED-talks, the ted384 metadata attached to snap-research/articulated-animation issue #12)"
        )
    target = raw_dir / "metadata.csv"
    if fetch:
        spec = PUBLISHED_METADATA.get(source, {}) if not metadata else {}
        fetch_url(metadata or spec["url"], target, spec.get("sha256"))
    return target


@dataclass
class Chunk:
    """One clip of a YouTube video: frames [start, end) at the reference fps, cropped to ``bbox``."""

    youtube_id: str
    person: str
    start: int
    end: int
    bbox: tuple[int, int, int, int]  # left, top, right, bottom in reference (width, height) pixels
    ref_width: int
    ref_height: int
    fps: float
    partition: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def field_name(self) -> str:
        """``person#youtube_id#start#end`` (``youtube_id#start#end`` without a person): the chunk's name in the
        field's published metadata and results (FOMM / TPSMM), identity first."""
        prefix = self.youtube_id if self.person == self.youtube_id else f"{self.person}#{self.youtube_id}"
        return f"{prefix}#{self.start:06d}#{self.end:06d}"

    @property
    def name(self) -> str:
        """The chunk's video name here: :attr:`field_name` in the safe form, ``person.youtube_id.start.end``
        (:mod:`cpabanim.data.names`; preprocess records the field's name in ``names.json``)."""
        return safe_name(self.field_name)


def read_metadata(path: str | Path) -> list[Chunk]:
    """Parse a video-preprocessing metadata CSV (video_id, start, end, bbox "l-t-r-b", fps, width, height,
    partition[, person_id])."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"metadata file {path} not found (set data.metadata to the dataset's metadata CSV)")
    chunks = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            try:
                video_id = row["video_id"]
                youtube_id = video_id.split("#")[-1]
                person = row.get("person_id") or (video_id.split("#")[0] if "#" in video_id else youtube_id)
                # both become file and folder names (download, preprocess): a strict pattern, no paths
                validate_id(youtube_id, "video id", f"{path} line {reader.line_num}")
                validate_id(person, "person id", f"{path} line {reader.line_num}")
                chunks.append(
                    Chunk(
                        youtube_id=youtube_id,
                        person=person,
                        start=int(row["start"]),
                        end=int(row["end"]),
                        bbox=tuple(int(float(v)) for v in row["bbox"].split("-")),
                        ref_width=int(row["width"]),
                        ref_height=int(row["height"]),
                        fps=float(row["fps"]),
                        partition=row["partition"],
                    )
                )
            except (KeyError, ValueError, AttributeError) as err:  # AttributeError: a short row (None field)
                raise DataError(f"{path}: bad metadata row {row} ({err})") from err
    return chunks


def download_youtube(youtube_id: str, out_dir: Path, url_template: str, options: dict[str, Any] | None = None) -> Path:
    """Fetch one video with yt-dlp (as a library) into ``out_dir/<id>.mp4``; :class:`DataError` on failure."""
    import yt_dlp

    validate_id(youtube_id, "YouTube id", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = contained_path(out_dir, f"{youtube_id}.mp4")
    if target.is_file():
        return target
    url = url_template.format(id=youtube_id)
    opts = {
        "format": "best[ext=mp4]/best",
        "outtmpl": str(out_dir / f"{youtube_id}.%(ext)s"),
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "continuedl": True,
        "retries": 2,
        "skip_unavailable_fragments": True,
        "enable_file_urls": url.startswith("file:"),
        **(options or {}),
    }
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            ydl.download([url])
    except Exception as err:  # yt_dlp.utils.DownloadError and friends: dead, private, region-locked, bot check
        raise DataError(
            f"{youtube_id}: {str(err).strip().splitlines()[-1] if str(err) else type(err).__name__}"
        ) from err
    produced = sorted(out_dir.glob(f"{youtube_id}.*"))
    produced = [p for p in produced if p.suffix not in (".part", ".ytdl")]
    if not produced:
        raise DataError(f"{youtube_id}: yt-dlp reported success but wrote no file")
    if produced[0] != target:
        os.replace(produced[0], target)
    return target


def crop_chunk(video_path: Path, chunk: Chunk, size: int) -> np.ndarray:
    """Frames of ``chunk`` from its downloaded video, cropped to its box and resized: ``uint8 (T, size, size, 3)``.

    As video-preprocessing's ``load_videos.py``: the frame range and box are given at the reference fps
    and resolution and are rescaled to those of the downloaded file. Cropped and resized as decoded, a few frames
    at a time (``read_video``'s shrink): the chunk is never held at the video's resolution (a 1,024-frame 1080p
    TaiChi chunk was 6.4 GB so).
    """
    from cpabanim.data.movie import movie_info
    from cpabanim.data.video import read_movie_range, resize_frames

    fps, count = movie_info(video_path)[:2]
    fps = fps or chunk.fps
    # frame i belongs to the chunk iff start <= i * ref_fps / fps < end (load_videos.py's test)
    first = math.ceil(chunk.start * fps / chunk.fps - 1e-9)
    last = min(count, math.ceil(chunk.end * fps / chunk.fps - 1e-9))
    if last - first < 2:
        raise DataError(f"{chunk.name}: fewer than two frames in [{chunk.start}, {chunk.end}) of {video_path.name}")

    def crop(frames: np.ndarray) -> np.ndarray:
        height, width = frames.shape[1:3]  # a frame over the pixel budget is decoded downscaled (data.movie)
        sx, sy = width / chunk.ref_width, height / chunk.ref_height
        left, top, right, bottom = chunk.bbox
        left, right = max(0, int(left * sx)), min(width, int(right * sx))
        top, bottom = max(0, int(top * sy)), min(height, int(bottom * sy))
        if right - left < 2 or bottom - top < 2:
            raise DataError(f"{chunk.name}: empty crop box {chunk.bbox} for a {width}x{height} video")
        source = f"{chunk.name} (crop of {video_path.name})"
        return resize_frames(np.ascontiguousarray(frames[:, top:bottom, left:right]), size, source=source)

    return read_movie_range(video_path, first, last, shrink=crop)
