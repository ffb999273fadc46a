"""One file per video: a zip of its frames as *stored* PNG members (docs/data.md, "Storage").

A processed video is ``<name>.zip`` holding ``00000.png, 00001.png, ...`` without compression on top of the PNGs'
own (``ZIP_STORED``), fixed timestamps and a JSON record in the zip comment (what made it: frame count, the config
digest, the dataset's own name). Why a zip of PNGs, measured against frame folders and the alternatives in
``cpabanim bench dataset``:

- **few files**: VoxCeleb's 4.1 M frames become 20 k files, which DVC hashes, links and pushes in minutes instead
  of hours (DVC's own advice for millions of small files is an archive);
- **random access** to any frame: the central directory gives each member's offset, one seek and one PNG decode,
  as fast as opening one PNG file;
- **no larger** than the PNGs (a stored member adds 76 bytes of headers), **lossless**, and the bytes of a copy
  whose frames are already PNGs at ``data.frame_size`` are kept as they are (no decode and re-encode);
- the standard library writes and reads it; ``unzip -l`` shows it.

A file is written beside its place as ``.<name>.tmp`` (hidden from DVC and every listing) and renamed when whole,
so an interrupted write never leaves an archive that a resumed run would take as done; its record says what
config made it, so a resumed run reuses it only for the same config.
"""

from __future__ import annotations

import functools
import io
import json
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cpabanim import files
from cpabanim.errors import DataError

SUFFIX = ".zip"
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same frames give the same bytes
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EOCD = b"PK\x05\x06"  # the zip's end-of-central-directory record: 22 bytes, then the comment
_MAX_COMMENT = 65535
_TAIL = 4096  # bytes read from an archive's end to find its record (a 32-frame clip's is about 700)


def member_name(index: int) -> str:
    """The name of frame ``index`` inside an archive: ``00000.png``."""
    return f"{index:05d}.png"


def encode_png(image: np.ndarray, compress_level: int = 6) -> bytes:
    """uint8 (H, W, 3) RGB or (H, W) labels -> PNG bytes (PIL, no metadata: the same pixels give the same bytes, the
    bytes the frame folders held)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(
        buffer, format="PNG", compress_level=compress_level
    )
    return buffer.getvalue()


def png_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit depth, colour type, interlace) from a PNG's IHDR chunk, or None for anything else."""
    if len(data) < 33 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return width, height, data[24], data[25], data[28]


def is_plain_rgb_png(data: bytes, size: int) -> bool:
    """Whether ``data`` is a non-interlaced 8-bit RGB PNG of ``size`` x ``size``: what preprocessing would write, so
    a copy's frame like this is stored as it is."""
    return png_header(data) == (size, size, 8, 2, 0)


def write_archive(path: str | Path, members: Iterable[bytes], record: dict[str, Any]) -> Path:
    """Write the PNG ``members`` (frame 0 first) as ``path``, atomically; ``record`` (JSON) becomes the zip comment,
    with where each member's local header starts and its size (``offsets``, ``sizes``: a reader finds any frame
    from the file's tail alone, without parsing the central directory). Returns ``path``."""

    def write(handle) -> None:
        offsets, sizes = [], []
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for index, data in enumerate(members):
                info = zipfile.ZipInfo(member_name(index), date_time=_DATE)
                archive.writestr(info, data)
                offsets.append(info.header_offset)
                sizes.append(len(data))
            comment = json.dumps({**record, "offsets": offsets, "sizes": sizes}, sort_keys=True).encode()
            # a longer comment than a zip holds: the record alone (readers then use the central directory)
            archive.comment = comment if len(comment) <= _MAX_COMMENT else json.dumps(record, sort_keys=True).encode()

    return files.write_atomically(path, write)


def _tail_record(handle, size: int) -> dict[str, Any] | None:
    """The JSON record of an archive's comment, read from the file's tail (None when there is none)."""
    tail = min(size, _TAIL)
    handle.seek(size - tail)
    data = handle.read(tail)
    end = data.rfind(_EOCD)
    if end < 0 or end + 22 > len(data):
        return None
    length = int.from_bytes(data[end + 20 : end + 22], "little")
    if end + 22 + length != len(data):  # a comment longer than the tail read, or bytes after the zip
        if length + 22 > size:
            return None
        handle.seek(size - length)
        comment = handle.read(length)
    else:
        comment = data[end + 22 :]
    try:
        record = json.loads(comment) if comment else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The record an archive carries in its comment, or None when the file is absent, not a zip or has none."""
    try:
        with open(path, "rb") as handle:
            return _tail_record(handle, os.fstat(handle.fileno()).st_size)
    except OSError:
        return None


def is_archive(path: Path) -> bool:
    """Whether ``path`` names a frame archive (a ``.zip`` file)."""
    return path.suffix.lower() == SUFFIX and path.is_file()


class FrameArchive:
    """Random access to the frames of one archive: ``len(archive)``, ``archive.image(i)`` (the stored image:
    uint8 (H, W, 3) RGB, or (H, W) for label maps), ``archive.images(indices)``, ``archive.png(i)`` (its bytes).

    Opened per use (``with FrameArchive(path) as archive``), so nothing grows with the number of videos a process
    has read. An archive :func:`write_archive` wrote is read from its tail record (each frame's offset and size):
    opening costs a read of its last 4 KB and one read per frame, about as much as opening a PNG file (``cpabanim
    bench dataset``); any other zip of PNG frames is read through its central directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        try:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as err:
            raise DataError(f"{self.path}: not a readable frame archive ({err.strerror or err})") from None
        self.record = _tail_record(self._file, os.fstat(self._file.fileno()).st_size)
        offsets, sizes = (self.record or {}).get("offsets"), (self.record or {}).get("sizes")
        if isinstance(offsets, list) and isinstance(sizes, list) and len(offsets) == len(sizes):
            self._spans = list(zip(offsets, sizes, strict=True))
            return
        self._open_zip()

    def _open_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(self._file)
        except (OSError, zipfile.BadZipFile) as err:
            self.close()
            raise DataError(f"{self.path}: not a readable frame archive ({err})") from None
        names = sorted(n for n in self._zip.namelist() if n.lower().endswith(".png"))
        if len(names) != len(self._zip.namelist()):
            self.close()
            raise DataError(f"{self.path}: a frame archive holds PNG frames only (00000.png, 00001.png, ...)")
        self._names, self._spans = names, []

    def __enter__(self) -> FrameArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._file.close()

    def __len__(self) -> int:
        return len(self._names) if self._zip is not None else len(self._spans)

    def png(self, index: int) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(self._names[index])
            offset, size = self._spans[index]
            self._file.seek(offset)
            data = self._file.read(30 + len(member_name(index)) + size)  # local header, name, PNG (no extra field)
            if data[:4] != b"PK\x03\x04":
                raise DataError(f"{self.path}: frame {index} is not where the archive's record says")
            start = 30 + int.from_bytes(data[26:28], "little") + int.from_bytes(data[28:30], "little")
            if start + size > len(data):  # an extra field in the local header (another writer)
                self._file.seek(offset + start)
                return self._file.read(size)
            return data[start : start + size]
        except (OSError, zipfile.BadZipFile, KeyError, IndexError) as err:
            raise DataError(f"{self.path}: cannot read frame {index} ({err})") from None

    def image(self, index: int) -> np.ndarray:
        return decode_png(self.png(index), f"{self.path} frame {index}")

    def images(self, indices: Sequence[int] | None = None) -> np.ndarray:
        picked = range(len(self)) if indices is None else indices
        return np.stack([self.image(i) for i in picked])


@functools.cache
def _opencv():
    """cv2 with its own thread pool off (the loader's workers are the parallelism; a pool started before a fork is
    unusable in the forked workers)."""
    import cv2

    cv2.setNumThreads(0)
    return cv2


def decode_png(data: bytes, what: str) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, 3) RGB (colour, alpha dropped) or (H, W) (one channel), with OpenCV (as fast as
    reading a PNG file: the training loader's frame reader)."""
    cv2 = _opencv()
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        # PIL decodes the same bytes to the same pixels. OpenCV's decoder has been seen to refuse every image in a
        # long test process (after other tests ran; not reproduced alone), as dataset.read_frame falls back too.
        return decode_png_pil(data, what)
    if image.dtype != np.uint8:
        raise DataError(f"{what}: not an 8-bit PNG image")
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB
    return cv2.cvtColor(image, code)


def decode_png_pil(data: bytes, what: str) -> np.ndarray:
    """:func:`decode_png` with PIL: RGB (H, W, 3), or (H, W) for 8-bit grayscale (label maps)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.mode == "L":
                return np.asarray(image)
            if image.mode not in ("RGB", "RGBA", "P"):
                raise DataError(f"{what}: not an 8-bit PNG image (mode {image.mode})")
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as err:
        raise DataError(f"{what}: not a PNG image ({err})") from None
