"""Progress bars that read well in a terminal and in a log file.

In a terminal: tqdm's live bar. Otherwise (Snakemake's and DVC's logs, a SLURM job's output) tqdm would write a
carriage-return update per step into the file; there the bar prints one plain line every ``LOG_INTERVAL_S``
seconds (and the last), which a log viewer and ``grep`` can read.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

LOG_INTERVAL_S = 30.0


def progress_bar(iterable: Iterable | None = None, *, stream: TextIO | None = None, **options: Any):
    """``tqdm(iterable, **options)`` on a terminal; on anything else the same bar printing a line at most every
    :data:`LOG_INTERVAL_S` seconds, without carriage returns."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    if not _is_terminal(stream):
        options = {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, "ascii": True, "ncols": 100, **options}
        return tqdm(iterable, file=_LineWriter(stream), **options)
    return tqdm(iterable, file=stream, **options)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class _LineWriter:
    """A file for tqdm that turns each carriage-return refresh into a line of its own."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:
            self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()
