"""One headless Chromium for the tests, driven over its DevTools pipe (Debian's ``chromium``; ``.ci/run`` installs
it): :func:`chromium` finds the browser (None without one: a test skips), :class:`DevTools` runs it and sends it
DevTools Protocol commands (navigate, evaluate, set the files of an ``<input type=file>``, take a screenshot).

Used by tests/test_mlflow_ui.py (the MLflow UI's artifact views) and tests/test_app.py (``cpabanim app``'s page).

Why a pipe and not a port: ``--remote-debugging-pipe`` needs no free port, no HTTP client and no WebSocket
library: JSON messages ended by a NUL byte, read by the browser on its fd 3, written on its fd 4. ``--no-sandbox``:
the tests may run as root, where Chromium refuses its sandbox.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]


def chromium() -> str | None:
    """The installed Chromium (or Chrome), None when there is none."""
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


class DevTools:
    """One headless Chromium driven over its DevTools pipe, one page attached, so that a site's scripts load once
    and each view is a navigation inside the page. ``flags`` are added to :data:`BROWSER_FLAGS`."""

    def __init__(self, executable: str, log: Path, flags: tuple[str, ...] = ()):
        to_browser, self._to_browser = os.pipe()
        self._from_browser, from_browser = os.pipe()
        # the shell puts the browser's two pipe ends on its fds 3 and 4: first moved above them, so that no end
        # is itself fd 3 or 4 (closed by the redirections otherwise)
        to_browser, from_browser = (self._above_the_browser_fds(fd) for fd in (to_browser, from_browser))
        script = f'exec "$@" 3<&{to_browser} 4>&{from_browser} {to_browser}<&- {from_browser}>&-'
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        command = [executable, *BROWSER_FLAGS, *flags, "--remote-debugging-pipe", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", script, "bash", *command],
            pass_fds=(to_browser, from_browser),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self._session = b"", 0, None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    @staticmethod
    def _above_the_browser_fds(fd: int) -> int:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
        os.close(fd)
        return moved

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        """Send one command (to the page once attached) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self._session and not method.startswith("Target."):
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, (method, answer["error"])
                return answer.get("result", {})

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._from_browser, 1 << 16) if ready else b""
            if not chunk:
                pytest.fail(f"Chromium did not answer (exit code {self.process.poll()})")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression: str, await_promise: bool = False):
        """The value of a JavaScript expression in the page (a promise's value with ``await_promise``), run as if
        the user had acted (``userGesture``: media may start playing)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=await_promise, userGesture=True
        )
        assert "exceptionDetails" not in result, (expression, result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30, interval: float = 0.25):
        """Evaluate ``expression`` until it is truthy and return that value; a test failure after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"still false after {timeout} s: {expression}")
            time.sleep(interval)

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Choose ``paths`` in the ``<input type=file>`` that ``selector`` names, as the file dialog would (the
        input's ``change`` event fires)."""
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        assert node, f"no element matches {selector}"
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page, the whole of its height with ``full_page``."""
        options: dict = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            options.update(captureBeyondViewport=True, clip={**_box(size), "scale": 1})
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **options)["data"]))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call("Browser.close", timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._log.close()


def _box(size: dict) -> dict:
    return {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
