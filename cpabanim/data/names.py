"""Names of videos, pairs and folders that are safe everywhere: file systems, shells and URLs (docs/data.md, "Names").

The field names a clip after its parts joined by ``#`` (FOMM / TPSMM: ``id10001#7w0IBEWc9Qw#000993#001143``,
person, YouTube id, first and last frame). A ``#`` starts the fragment of a URL, so MLflow's artifact endpoint
answers 400 "Invalid path" for any artifact under such a name, and a shell takes it for a comment. Every name this
project writes is the :func:`safe_name` of the dataset's name:

- the part separator ``#`` becomes :data:`SEPARATOR` (``.``); the parts of VoxCeleb, TaiChi and TED ids are
  ``[A-Za-z0-9_-]``, so the parts stay apart: ``id10001.7w0IBEWc9Qw.000993.001143``;
- every other character outside ``[A-Za-z0-9._-]`` (space, ``?``, ``%``, ``/``, a non-ASCII letter...) becomes
  ``_``;
- a leading ``.`` or ``-`` becomes ``_`` (a hidden file, a shell option), and so does the ``.`` of a trailing
  ``.`` or ``.tmp`` (temporary names, which every listing skips).

Safe names map to themselves, so the rule can be applied again anywhere. Going back is exact through the record
preprocess writes beside the dataset, ``<processed>/names.json``: ``{safe name: original name}`` for every name it
changed (:func:`write_record`, :func:`original_name`). The identity of a clip (``data.id_sampling``) is the part
before the first separator (:func:`identity`).
"""

from __future__ import annotations

import re
from pathlib import Path

from cpabanim import files
from cpabanim.errors import DataError

SEPARATOR = "."  # between the parts of a clip name, where the field writes '#'
FIELD_SEPARATOR = "#"
NAMES_FILE = "names.json"  # in the processed folder: {safe name: original name} of every name that changed
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_BAD_START = re.compile(r"^[.-]")
_BAD_END = re.compile(r"\.(tmp)?$")


def safe_name(name: str) -> str:
    """The safe form of one name, by the rule of this module's docstring; a path (a ``/``, ``.``, ``..``) or an
    empty name is a :class:`DataError`: a name is one folder or file name.

    >>> safe_name("id10001#7w0IBEWc9Qw#000993#001143")
    'id10001.7w0IBEWc9Qw.000993.001143'
    >>> safe_name("my clip?100%")
    'my_clip_100_'
    """
    if not isinstance(name, str) or not name:
        raise DataError(f"a video name must be a non-empty string, not {name!r}")
    if "/" in name or name in (".", ".."):  # a path, not a name: it would lead elsewhere than one folder down
        raise DataError(f"{name!r} is a path, not a video name (one folder or file name, without '/')")
    safe = _UNSAFE.sub("_", name.replace(FIELD_SEPARATOR, SEPARATOR))
    safe = _BAD_START.sub("_", safe)
    return _BAD_END.sub(lambda match: "_" + (match.group(1) or ""), safe)


def is_safe(name: str) -> bool:
    """Whether ``name`` is already in its safe form."""
    return bool(name) and safe_name(name) == name


def join_parts(*parts: str) -> str:
    """A clip name from its parts (person, video id, frames...), in the safe form: ``a.b.c``."""
    return safe_name(FIELD_SEPARATOR.join(parts))


def identity(name: str) -> str:
    """The identity a clip belongs to: the part of its safe name before the first separator (``id10001`` of
    ``id10001.7w0IBEWc9Qw.000993.001143``, ``astronaut`` of ``astronaut.test003``). A name in the field's form
    (``#``) gives the same identity."""
    return safe_name(name).split(SEPARATOR, 1)[0]


def write_record(processed_root: str | Path, originals: dict[str, str]) -> Path:
    """Write ``<processed_root>/names.json``: ``{safe name: original}`` for the entries of ``originals`` (safe
    name -> the dataset's name) whose name changed, sorted; an empty record when none did."""
    changed = {safe: originals[safe] for safe in sorted(originals) if originals[safe] != safe}
    path = Path(processed_root) / NAMES_FILE
    files.write_json(path, changed)
    return path


def read_record(processed_root: str | Path) -> dict[str, str]:
    """The ``{safe name: original}`` record of a processed dataset (empty without one: nothing was renamed)."""
    path = Path(processed_root) / NAMES_FILE
    record = files.read_json(path, fix="re-run `cpabanim preprocess`")
    if not all(isinstance(v, str) for v in record.values()):  # {"a": 1}
        raise DataError(f"{path}: not a mapping of safe names to original names; re-run `cpabanim preprocess`")
    return record


def original_name(name: str, processed_root: str | Path) -> str:
    """The dataset's own name of the video ``name`` of a processed dataset (``name`` itself when unchanged)."""
    return read_record(processed_root).get(name, name)
