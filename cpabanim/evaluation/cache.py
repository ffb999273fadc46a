"""Per-video extractor results, cached on disk by the frames' content hash (re-evaluation is cheap).

The key covers the extractor's name (model and options) and the exact frame bytes, so a changed generation
or a changed extractor never reuses a stale result, and the driving videos are extracted only once. The folder is
shared by every experiment and seed (``{paths.outputs}/.eval_cache`` by default: docs/evaluation.md, "Caching"),
so the test videos' frames are extracted once for a whole study.

Concurrent jobs (the evaluate shards of several runs, on several machines over a shared disk) share it safely:
each result is written whole or not at all (an atomic rename), and a job about to extract frames another job is
extracting waits for that result (a lock file beside it, ``<key>.npz.lock``, holding the holder's host and process,
its time refreshed every :data:`HEARTBEAT_S` while the holder extracts) instead of extracting them twice. A lock
whose holder is gone (a dead process on this host, or a lock not refreshed for :data:`STALE_LOCK_S`, on any host)
is taken over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cpabanim.data.video import frames_digest
from cpabanim.files import write_atomically

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # how often a holder refreshes its lock's time
STALE_LOCK_S = 120.0  # a lock not refreshed for this long is taken over (its holder, or its host, is gone)
WAIT_S = 0.2  # how often a job waiting for another job's result looks for it
ROLES = ("reference", "generated")  # the test videos' frames (the same in every run), and the runs' own


class ExtractionCache:
    """``cache(extractor, frames, role)`` -> the extractor's output, computed once per (extractor, frames).

    ``counts[role]``: ``hits`` (results read), ``misses`` (results computed) and ``frames`` (frames extracted) per
    role, ``reference`` or ``generated``."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self.counts = {role: {"hits": 0, "misses": 0, "frames": 0} for role in ROLES}

    @property
    def hits(self) -> int:
        return sum(count["hits"] for count in self.counts.values())

    @property
    def misses(self) -> int:
        return sum(count["misses"] for count in self.counts.values())

    def __call__(self, extractor, frames: np.ndarray, role: str = "generated") -> np.ndarray:
        if self.folder is None:
            return self._extract(extractor, frames, role)
        path = self.folder / extractor.name / f"{frames_digest(frames)}.npz"
        values = self._read(path)
        if values is None:
            with self._claim(path) as values:
                if values is None:  # ours to extract
                    values = self._extract(extractor, frames, role)
                    # atomic: a concurrent or interrupted run never leaves half a file
                    write_atomically(path, lambda handle: np.savez_compressed(handle, values=values))
                    return values
        self.counts[role]["hits"] += 1
        return values

    def _extract(self, extractor, frames: np.ndarray, role: str) -> np.ndarray:
        values = extractor(frames)
        self.counts[role]["misses"] += 1
        self.counts[role]["frames"] += len(frames)
        return values

    @staticmethod
    def _read(path: Path) -> np.ndarray | None:
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                return stored["values"]
        except (OSError, ValueError, KeyError, EOFError) as err:
            log.warning("ignoring unreadable cache file %s (%s)", path, err)
            return None

    @contextlib.contextmanager
    def _claim(self, path: Path) -> Iterator[np.ndarray | None]:
        """Yield None holding the lock of ``path`` (the caller extracts), or the result another job wrote while
        this one waited for its lock."""
        lock = path.with_name(path.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        while True:
            try:
                descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                values = self._read(path)
                if values is not None:
                    yield values
                    return
                if stale(lock):
                    log.info("taking over the stale extraction lock %s", lock)
                    lock.unlink(missing_ok=True)
                    continue
                time.sleep(WAIT_S)
                continue
            with os.fdopen(descriptor, "w") as handle:
                handle.write(me)
            try:
                with heartbeat(lock):
                    yield self._read(path)  # written by a job that held the lock just before
            finally:
                lock.unlink(missing_ok=True)
            return


@contextlib.contextmanager
def heartbeat(lock: Path) -> Iterator[None]:
    """Refresh ``lock``'s time every :data:`HEARTBEAT_S` while the block runs (an extraction of minutes), so that
    only a lock whose holder is gone grows stale."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(lock)

    thread = threading.Thread(target=beat, name="extraction-lock", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def stale(lock: Path) -> bool:
    """Whether ``lock``'s holder is gone: a process of this host that no longer runs, or a lock not refreshed for
    :data:`STALE_LOCK_S` (another host's holder cannot be asked)."""
    try:
        holder = lock.read_text().split()
        age = time.time() - lock.stat().st_mtime
    except (OSError, ValueError):
        return False  # just released or just being written: look again
    if len(holder) == 2 and holder[0] == socket.gethostname() and holder[1].isdigit():
        try:
            os.kill(int(holder[1]), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
    return age > STALE_LOCK_S
