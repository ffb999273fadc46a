"""Per-video extractor results, cached on disk by the frames' content hash (re-evaluation is cheap).

The key covers the extractor's name (model and options) and the exact frame bytes, so a changed generation
or a changed extractor never reuses a stale result, and the driving videos are extracted only once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cpabanim.data.video import frames_digest
from cpabanim.files import write_atomically

log = logging.getLogger(__name__)


class ExtractionCache:
    """``cache(extractor, frames)`` -> the extractor's output, computed once per (extractor, frames)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self.hits = 0
        self.misses = 0

    def __call__(self, extractor, frames: np.ndarray) -> np.ndarray:
        if self.folder is None:
            self.misses += 1
            return extractor(frames)
        path = self.folder / extractor.name / f"{frames_digest(frames)}.npz"
        if path.is_file():
            try:
                with np.load(path) as stored:
                    self.hits += 1
                    return stored["values"]
            except (OSError, ValueError, KeyError) as err:
                log.warning("ignoring unreadable cache file %s (%s)", path, err)
        values = extractor(frames)
        self.misses += 1
        # atomic: a concurrent or interrupted run never leaves half a file
        write_atomically(path, lambda handle: np.savez_compressed(handle, values=values))
        return values
