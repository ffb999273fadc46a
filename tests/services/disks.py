"""Real disk conditions the tests set up themselves: a folder no one may write to, and a full file system.

- :func:`read_only_folder`: mode 0555; root ignores mode bits, so as root the folder is also made immutable
  (``chattr +i``, e2fsprogs); where neither holds (root in a container without CAP_LINUX_IMMUTABLE) it skips.
- :func:`full_file_system`: a tmpfs of a few hundred KB mounted on a folder (``mount -t tmpfs``: root with
  CAP_SYS_ADMIN, as CI's container has), unmounted after; it skips where mounting is not allowed. A write that
  outgrows it fails with ENOSPC, as on a full disk: no simulated error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``path``, created empty, that this process cannot write to, for the block; writable again after."""
    path.mkdir()
    path.chmod(0o555)
    immutable = False
    if os.access(path, os.W_OK) and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    try:
        if os.access(path, os.W_OK):
            pytest.skip("running as root without `chattr +i`: no folder is read-only to this process")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o755)


@contextmanager
def full_file_system(path: Path, size_kb: int = 256) -> Iterator[Path]:
    """``path``, created and mounted as a tmpfs of ``size_kb`` KB, for the block; unmounted after."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root with CAP_SYS_ADMIN needed): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)
