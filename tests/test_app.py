"""``cpabanim app``: the demo as a web page, driven in a headless Chromium (tests/services/chromium.py).

The real command serves on a free port of 127.0.0.1 from a folder holding a tiny untrained checkpoint where
``cpabanim train`` puts one (``models/checkpoints/tiny/seed0/last.pt``: the page must list it), a photo without a
face and a driving movie. The browser uploads them through the page's ``<input type=file>`` elements, presses
Animate and waits for the result video to play and the explanation pictures to show; a screenshot of that page
is left in the temporary folder (``cpabanim-app.png``). Bad uploads (no face, a file that is no video, an image
too large to decode) must show the very line ``cpabanim demo`` prints for them, as a Gradio error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cpabanim import cli
from tests.eval.conftest import moving_blob_video
from tests.services.chromium import DevTools, chromium
from tests.services.http import wait_until_answering

SIZE = 32  # the tiny model's resolution
CHECKPOINT = Path("models/checkpoints/tiny/seed0/last.pt")
# the first press of Animate is a model load and, with crop=face, a face detection: on a busy 2-core machine
ANIMATE_TIMEOUT_S = 90
requires_gradio = pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None, reason="gradio not installed: pip install -e '.[app]'"
)
requires_chromium = pytest.mark.skipif(
    chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)"
)


def _huge_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims ``side`` x ``side`` pixels (over twice PIL's decompression-bomb limit) in a few
    bytes: what a user's oversized photo looks like to the demo, without making one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The folder the app runs in: the checkpoint, the photo, the driving movie and the bad uploads."""
    from cpabanim.commands.demo.panels import write_video
    from cpabanim.models.checkpoint import save_checkpoint
    from cpabanim.models.full import AnimationModel, ModelConfig
    from tests.train.helpers import tiny_params

    root = tmp_path_factory.mktemp("app")
    model = AnimationModel(ModelConfig.from_mapping(tiny_params(root / "params", motion="cpab")["model"]))
    (root / CHECKPOINT).parent.mkdir(parents=True)
    save_checkpoint(root / CHECKPOINT, model, params={"data": {"frame_size": SIZE}})
    write_video(np.ascontiguousarray(moving_blob_video(1, frames=7, size=64)), root / "driving.mp4", 10)
    Image.fromarray(moving_blob_video(2, frames=1, size=80)[0, :60]).save(root / "photo.png")
    (root / "broken.mp4").write_text("this is not a video\n")
    _huge_png(root / "huge.png")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app(folder):
    """``cpabanim app`` on a free port of 127.0.0.1 in ``folder`` (its temporary files, Gradio's uploads included,
    kept there too); yields its address; stops it (SIGTERM, as a service manager would)."""
    port = _free_port()
    log_path = folder / "app.log"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(folder / "gradio"), "TMPDIR": str(folder)}
    command = [str(Path(sys.executable).with_name("cpabanim")), "app", "--port", str(port), "--device", "cpu"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}/"
        try:
            wait_until_answering(base, process, log_path, "cpabanim app", timeout=90)
            yield base
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
    assert process.returncode == 0 and not list(folder.glob("cpabanim-app-*"))  # SIGTERM: stopped, cleaned up


@pytest.fixture(scope="module")
def browser(app, folder):
    # no user clicks the page: a video may play all the same
    devtools = DevTools(chromium(), folder / "chromium.log", flags=("--autoplay-policy=no-user-gesture-required",))
    yield devtools
    devtools.close()


def cli_error(folder: Path, source: str, driving: str, crop: str, caplog, monkeypatch) -> str:
    """The one line ``cpabanim demo`` prints for these inputs (run in ``folder``, so that it names them as the page
    does: by their file names)."""
    monkeypatch.chdir(folder)
    caplog.clear()
    args = ["--source", source, "--driving", driving, "--checkpoint", str(CHECKPOINT), "--crop", crop]
    assert cli.main(["demo", *args, "--device", "cpu", "--out", "never-written.mp4"]) == 1
    return next(r.getMessage() for r in caplog.records if getattr(r, "cli_prog", None) == "cpabanim demo")


def press_animate(browser: DevTools, base: str, photo: Path, driving: Path, crop: str) -> None:
    """Open the page afresh, upload ``photo`` and ``driving``, choose ``crop``, press Animate."""
    browser.call("Page.navigate", url=base)
    browser.wait_for("document.querySelectorAll('#photo input[type=file], #driving input[type=file]').length == 2")
    browser.set_files("#photo input[type=file]", [photo])
    browser.set_files("#driving input[type=file]", [driving])
    # each upload is done when the component shows it (a broken file still gets its element, without a picture)
    browser.wait_for("!!(document.querySelector('#photo img') && document.querySelector('#driving video'))")
    browser.evaluate(f"document.querySelector('#crop input[value={crop}]').click()")
    browser.evaluate("document.querySelector('#animate').click()")


def shown_errors(browser: DevTools, expected: str) -> list[str]:
    """The texts of the errors the page shows, once one of them is ``expected`` (or after a while): besides the
    app's, the page's own video player may say that it cannot play a broken upload."""
    texts = "JSON.stringify([...document.querySelectorAll('[data-testid=toast-text]')].map(t => t.innerText))"
    deadline = time.monotonic() + ANIMATE_TIMEOUT_S
    while True:
        shown = json.loads(browser.evaluate(texts))
        if expected in shown or time.monotonic() > deadline:
            return shown
        time.sleep(0.25)


@requires_gradio
@requires_chromium
def test_the_page_animates_the_uploads_and_shows_the_video_and_the_explanation(app, browser, folder):
    press_animate(browser, app, folder / "photo.png", folder / "driving.mp4", crop="none")
    chosen = browser.evaluate("document.querySelector('#checkpoint input').value")
    assert chosen == str(CHECKPOINT)  # found under models/checkpoints, chosen by default
    ready = "(v => v && v.src && v.readyState >= 2 && v.src)(document.querySelector('#result video'))"
    assert "result.mp4" in browser.wait_for(ready, timeout=ANIMATE_TIMEOUT_S)
    # the page autoplays it in a loop (0.7 s): from a pause at 0, play() must move it on
    played = browser.evaluate(
        "(async v => { v.muted = true; v.pause(); v.currentTime = 0;"
        " await new Promise(r => v.addEventListener('seeked', r, {once: true})); await v.play();"
        " await new Promise(r => setTimeout(r, 300)); return [v.currentTime, v.paused, v.videoWidth]; })"
        "(document.querySelector('#result video'))",
        await_promise=True,
    )
    assert played[0] > 0 and not played[1] and played[2] >= 3 * SIZE, played  # source | driving | result panels
    pictures = "[...document.querySelectorAll('#explanation img')].map(i => [i.src, i.complete && i.naturalWidth])"
    shown = json.loads(browser.wait_for(f"(p => p.length >= 5 && p.every(x => x[1]) && JSON.stringify(p))({pictures})"))
    names = sorted(Path(src).name for src, _ in shown)
    assert names[:5] == ["contributions.png", "flow.png", "keypoints.png", "occlusion.png", "overview.png"], names
    assert not browser.evaluate("document.querySelectorAll('[data-testid=toast-text]').length")
    screenshot = browser.screenshot(Path(tempfile.gettempdir()) / "cpabanim-app.png")
    assert screenshot.stat().st_size > 20_000


@requires_gradio
@requires_chromium
@pytest.mark.parametrize(
    ("source", "driving", "crop", "expected"),
    [
        ("photo.png", "driving.mp4", "face", ("photo.png", "no face")),
        ("photo.png", "broken.mp4", "none", ("broken.mp4", "cannot decode")),
        ("huge.png", "driving.mp4", "none", ("huge.png", "too many pixels")),
    ],
    ids=["no-face", "unreadable-video", "huge-image"],
)
def test_a_bad_upload_shows_the_line_the_cli_prints(
    app, browser, folder, caplog, monkeypatch, source, driving, crop, expected
):
    line = cli_error(folder, source, driving, crop, caplog, monkeypatch)
    assert all(word in line for word in expected) and "/" not in line, line  # what went wrong, which file
    press_animate(browser, app, folder / source, folder / driving, crop=crop)
    shown = shown_errors(browser, line)
    assert line in shown and set(shown) <= {line, "Video not playable"}, shown


def test_without_gradio_the_command_says_which_extra_to_install(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    assert cli.main(["app"]) == 1
    lines = [r.getMessage() for r in caplog.records if getattr(r, "cli_prog", None) == "cpabanim app"]
    assert lines == ["the web app needs gradio: pip install 'cpabanim[app]'"]


@requires_gradio
def test_without_a_checkpoint_the_command_says_how_to_get_one(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    assert cli.main(["app", "--checkpoint"]) == 2  # --checkpoint needs a path
    assert cli.main(["app"]) == 1
    lines = [r.getMessage() for r in caplog.records if getattr(r, "cli_prog", None) == "cpabanim app"]
    assert "no checkpoint to offer" in lines[-1] and "--checkpoint PATH" in lines[-1], lines
