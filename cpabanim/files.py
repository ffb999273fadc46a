"""Files the project writes and paths it builds from data: one home each for the atomic write, JSON, the file
hash and path containment (docs/reliability.md)."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cpabanim.errors import CpabanimError, DataError, first_line

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TEMP_INFIX = ".tmp"  # temporary name: ".<name>.tmp<pid>" (the pattern .dvcignore lists: .*.tmp[0-9]*)


def temp_path_for(path: str | Path) -> Path:
    """The temporary file a save of ``path`` writes first: hidden, same folder (so ``os.replace`` is atomic),
    named after this process so two savers never share one, and matched by .dvcignore's ``.*.tmp[0-9]*``."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_INFIX}{os.getpid()}")


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a crash right after ``os.replace`` keeps the new checkpoint)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not support fsync on folders; the rename is still atomic
        pass
    finally:
        os.close(fd)


def write_atomically(
    path: str | Path, write: Callable[[Any], None], verify: Callable[[Path], None] | None = None
) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, ``verify(temporary path)`` (when
    given) and rename it over ``path``.

    A failure (disk full, read-only folder, quota, an exception in ``write`` or ``verify``) removes the
    temporary file and leaves ``path`` as it was; OS errors become one :class:`CpabanimError` line naming ``path``.
    """
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException as exc:  # KeyboardInterrupt included: never leave the temporary file behind
        tmp.unlink(missing_ok=True)
        error = _os_error_of(exc)
        if error is not None:
            raise CpabanimError(
                f"cannot write {path}: {describe_os_error(error, path)}; the previous file (if any) is unchanged"
            ) from exc
        raise
    _fsync_folder(path.parent)
    return path


def _os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (torch wraps write failures of its zip writer in RuntimeError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, RuntimeError) and "write" in str(exc).lower():
        return OSError(errno.EIO, str(exc).splitlines()[0])
    return None


def describe_os_error(error: OSError, path: Path) -> str:
    """A short cause and fix for the usual write failures."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device of {path.parent} (free some space and run again)"
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{path.parent} is not writable ({error.strerror or error}); make it writable or change paths.*"
    if error.errno == errno.EFBIG:
        return "the file exceeds the size allowed for this process (ulimit -f) or file system"
    return error.strerror or str(error)


# What a dataset id (YouTube id, person id, video id) may look like: it becomes a file or folder name, so no
# '/', no leading '.', nothing a shell, glob or yt-dlp output template would interpret (docs/reliability.md).
SAFE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def validate_id(value: str, what: str, where: str | Path) -> str:
    """``value`` when it matches :data:`SAFE_ID`; else :class:`DataError` naming ``where`` it came from."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value):
        raise DataError(
            f"{where}: {what} {value!r} is not a valid id (letters, digits, '_', '-', '.', not starting "
            "with '.', at most 128 characters); fix or remove that entry"
        )
    return value


def contained_path(root: str | Path, *parts: str | Path, allow_root: bool = False) -> Path:
    """``root / parts`` after checking that it resolves (symlinks followed) inside ``root``.

    Every path built from data (a dataset id, a file name, an archive member) goes through here before
    anything is written there: a ``..``, an absolute part or a symlink pointing elsewhere raises
    :class:`DataError` instead of writing outside ``root``. ``root`` itself is refused unless ``allow_root``.
    """
    root = Path(root)
    candidate = root.joinpath(*parts)
    base, resolved = root.resolve(), candidate.resolve()
    if not resolved.is_relative_to(base) or (resolved == base and not allow_root):
        shown = "/".join(str(p) for p in parts)
        raise DataError(
            f"{shown!r} would be written at {resolved}, outside {root}: refused (an id or archive "
            "member with '..', an absolute path or a link pointing elsewhere)"
        )
    return candidate


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_of_json(value: Any) -> str:
    """sha256 of ``value`` as sorted JSON: what a resumed stage compares to know that the same inputs made a file."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON atomically with sorted keys (stable bytes for DVC); a failed write leaves ``path`` as it was and
    raises one :class:`CpabanimError` line naming it."""
    text = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    write_atomically(path, lambda handle: handle.write(text))


def read_json(
    path: str | Path, fix: str = "delete it and re-run the stage that writes it", corrupt_ok: bool = False
) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when there is no such file. A file cut short or not JSON is one
    :class:`DataError` line naming it and ``fix``, or with ``corrupt_ok`` (a record the caller rewrites
    anyway, such as the previous run's manifest) a warning and ``{}``."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as err:  # JSONDecodeError, UnicodeDecodeError, an unreadable file
        message = f"{path}: not readable as JSON ({first_line(err)})"
        if corrupt_ok:
            log.warning("%s; ignored, it will be rewritten", message)
            return {}
        raise DataError(f"{message}; {fix}") from None
    if not isinstance(data, dict):
        if corrupt_ok:
            return {}
        raise DataError(f"{path}: holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


# output folders: a folder cpabanim fills is marked as its own; one holding anything else is never written into
OWNER_FILE = ".cpabanim-output"


def check_output_folder(
    folder: str | Path, fix: str = "move them away or choose another folder", own: Callable[[str], Any] | None = None
) -> None:
    """:class:`CpabanimError` in one line unless ``folder`` is absent, empty or an output folder cpabanim claimed
    (:func:`claim_output_folder`): a folder holding files cpabanim did not write is never written into nor
    cleared, so an output path pointed at a user's folder loses nothing (docs/reliability.md, "Never overwrite").
    ``own``: a test of the names cpabanim writes there, for folders without a mark (frames: ``00000.png``...)."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():
        raise CpabanimError(f"{folder} is a link to nothing: remove it or choose another folder")
    if folder.exists() and not folder.is_dir():
        raise CpabanimError(f"{folder} exists and is not a folder: {fix}")
    if folder.is_dir() and not (folder / OWNER_FILE).is_file():
        foreign = sorted(p.name for p in folder.iterdir() if own is None or not own(p.name))
        if foreign:
            shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise CpabanimError(
                f"{folder} holds files cpabanim did not write ({shown}): nothing was changed there; {fix}"
            )


def claim_output_folder(folder: str | Path, writer: str, fix: str = "move them away or choose another folder") -> Path:
    """Make ``folder`` an output folder of ``writer`` (a stage, a command), after :func:`check_output_folder`. The
    mark is written before anything else, with bytes that depend only on ``writer`` (the folder's DVC hash stays
    a function of what the stage writes), so the folder of an interrupted run is still cpabanim's."""
    folder = Path(folder)
    check_output_folder(folder, fix)
    folder.mkdir(parents=True, exist_ok=True)
    mark = folder / OWNER_FILE
    if not mark.is_file():
        mark.write_text(f"an output folder of cpabanim ({writer}): what it holds is rewritten when that runs again\n")
    return folder


def fresh_output_folder(folder: str | Path, writer: str) -> Path:
    """:func:`claim_output_folder`, then remove everything in it but the mark: what an earlier run wrote there
    (stale frames of a longer run would corrupt the metrics), never what a user put there."""
    folder = claim_output_folder(folder, writer)
    for entry in folder.iterdir():
        if entry.name == OWNER_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return folder


def check_output_file(path: str | Path, flag: str, written_by_cpabanim: Callable[[Path], bool]) -> None:
    """:class:`CpabanimError` in one line, before any work, unless the file an output flag names (``--out``) is
    absent or one cpabanim wrote (``written_by_cpabanim`` reads the mark the writer leaves in the file): a user's
    own video, checkpoint or notes is never replaced (docs/reliability.md, "Never overwrite")."""
    path = Path(path)
    if path.is_dir():
        raise CpabanimError(f"{flag} {path} is a folder: give the name of the file to write")
    if path.exists() and not (path.is_file() and written_by_cpabanim(path)):
        raise CpabanimError(
            f"{flag} {path} exists and cpabanim did not write it: nothing was changed; choose another file name "
            "or move it away"
        )


def link_or_copy(source: str | Path, target: str | Path) -> int:
    """Make ``target`` hold what ``source`` holds (a file, or a folder tree), each file a hard link to the source's
    (no second copy on disk: a sharded stage's gather lays out its shards' files), else a copy where the file
    system refuses links. ``target`` must not exist. Returns the number of files."""
    source, target = Path(source), Path(target)
    if source.is_dir():
        target.mkdir(parents=True)
        return sum(link_or_copy(entry, target / entry.name) for entry in sorted(source.iterdir()))
    try:
        os.link(source, target)
    except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK, errno.EACCES):
            raise
        shutil.copy2(source, target)
    return 1
