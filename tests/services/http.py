"""Waiting for a server the tests started (mlflow, cpabanim tracking-server, cpabanim app) to answer."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def wait_until_answering(url: str, process: subprocess.Popen, log: Path, what: str, timeout: float = 90) -> None:
    """Poll ``url`` until it answers 200; fail with the end of ``log`` if ``process`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"{what} did not answer {url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
