"""The MLflow UI opens every GIF/MP4/PNG artifact the report logs (issue 11, docs/pipeline.md "MLflow").

Reconstruction and animation files are named after test videos, whose names contain ``#`` (``astronaut#test003``);
MLflow's artifact endpoint answers 400 "Invalid path" for such names. The report logs them under safe names
(:func:`cpabanim.tracking.safe_artifact_name`). These tests log a small store through the report's own logging,
start a real ``mlflow server`` on it and fetch every artifact the way the UI does (``/get-artifact``); with a
Chromium installed (Debian: ``apt-get install chromium``) they also open the UI's artifact view headless and check
that the image is rendered. MLflow's server forks workers that survive SIGTERM to the parent: the whole process
group is stopped at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import PROJECT_ROOT

EXPERIMENT = "ui-check"
MAGIC = {".gif": (b"GIF87a", b"GIF89a"), ".png": (b"\x89PNG\r\n\x1a\n",), ".mp4": (b"ftyp",)}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _frames(count: int = 3, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _write_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_frames(1)[0]).resize((64, 64)).save(path)
    return path


def _experiment_files(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The per-experiment paths and report outputs ``parents.log_experiment`` logs, with video names like the
    embedded default's (``#`` in them)."""
    from cpabanim.data.frames import write_viewing_videos

    out = root / "outputs" / EXPERIMENT
    recon, anim = out / "reconstruction", out / "animation"
    write_viewing_videos(_frames(), recon / "clip#test000", fps=5, mp4=True, gif=True)
    write_viewing_videos(_frames(), anim / "000_clip#test000_to_other#test001" / "relative", fps=5, mp4=True, gif=True)
    (out / "metrics.json").write_text(json.dumps({"recon/l1": 0.1}))
    (out / "metrics_per_video.csv").write_text("part,video,l1\nreconstruction,clip#test000,0.1\n")
    paths = {
        "metrics": out / "metrics.json",
        "per_video": out / "metrics_per_video.csv",
        "reconstruction": recon,
        "animation": anim,
        "checkpoints": root / "checkpoints",
        "processed": root / "processed",
    }
    report = {key: _write_png(root / "report" / f"{key}.png") for key in ("metrics_png", "samples_png", "loss_png")}
    report["html"] = root / "report" / "index.html"
    report["html"].write_text("<!doctype html><title>report</title>")
    return paths, report


@pytest.fixture
def store(tmp_path, monkeypatch) -> dict:
    """A sqlite store with one experiment parent run holding the report's artifacts (logged by the report)."""
    from cpabanim.config.layers import load_params
    from cpabanim.reporting import parents
    from cpabanim.tracking import provenance, runs

    monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts under ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(provenance.PIPELINE_RUN_ENV, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    params = load_params(
        PROJECT_ROOT / "params.yaml", overrides=[f"tracking.uri={uri}", f"paths.processed={tmp_path / 'processed'}"]
    )
    paths, outputs = _experiment_files(tmp_path)
    run_id = runs.experiment_parent(params, EXPERIMENT)
    parents.log_experiment(run_id, EXPERIMENT, {"recon/l1": 0.1}, paths, outputs, log_model=False)
    client = runs.mlflow_client()
    experiment_id = client.get_run(run_id).info.experiment_id
    return {
        "uri": uri,
        "run_id": run_id,
        "experiment_id": experiment_id,
        "artifacts": _artifacts(client, run_id),
        "root": tmp_path,
    }


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for info in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, info.path) if info.is_dir else [info.path]
    return files


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(store):
    """``mlflow server`` on a free port over the store; yields its base URL; stops its whole process group."""
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(store["root"] / "server.log", "wb")  # noqa: SIM115 - closed below, after the server is gone
    process = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            store["uri"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=store["root"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, store["root"] / "server.log")
        yield base
    finally:
        _stop_group(process)
        log.close()


def _wait_until_up(base: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer /health in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL what is left after a few seconds (its job workers ignore TERM)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(process.pid):
            process.poll()  # reap the leader, so that a dead group is not kept alive by its zombie
            time.sleep(0.2)
        if not _group_alive(process.pid):
            break
    process.wait(timeout=10)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _artifact_url(base: str, run_id: str, path: str) -> str:
    return f"{base}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})


def test_media_artifacts_are_logged_under_names_the_ui_accepts(store):
    media = [p for p in store["artifacts"] if Path(p).suffix in MAGIC]
    assert {
        "reconstruction/clip_test000.gif",
        "reconstruction/clip_test000.mp4",
        "animation/000_clip_test000_to_other_test001/relative.gif",
        "report/metrics_png.png",
    } <= set(media)
    assert not [p for p in store["artifacts"] if "#" in p]


def test_every_media_artifact_is_served_by_the_ui_endpoint(store, server):
    media = [p for p in store["artifacts"] if Path(p).suffix in MAGIC]
    for path in media:
        status, body = _get(_artifact_url(server, store["run_id"], path))
        assert status == 200, (path, body[:300])
        assert any(magic in body[:12] for magic in MAGIC[Path(path).suffix]), path
    # why the names are rewritten: the same endpoint refuses a '#' in the path
    status, _ = _get(_artifact_url(server, store["run_id"], "reconstruction/clip#test000.gif"))
    assert status == 400


def _chromium() -> str | None:
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def _dump_dom(browser: str, url: str) -> str:
    """The page's DOM after its scripts ran (headless; --no-sandbox: the tests may run as root)."""
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=20000",
            "--window-size=1400,900",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_the_ui_artifact_view_renders_gif_and_png_artifacts(store, server):
    browser = _chromium()
    for path in (
        "reconstruction/clip_test000.gif",
        "animation/000_clip_test000_to_other_test001/relative.gif",
        "report/samples_png.png",
    ):
        url = f"{server}/#/experiments/{store['experiment_id']}/runs/{store['run_id']}/artifacts/{path}"
        dom = _dump_dom(browser, url)
        # the UI fetches the file through /get-artifact and shows it as an <img> of a blob URL; on an error it
        # shows a message instead
        images = re.findall(r"<img[^>]*>", dom)
        assert any(f'alt="{path}"' in tag and 'src="blob:' in tag for tag in images), (path, images[:5])
        assert "Invalid path" not in dom


def test_cpabanim_ui_serves_the_store_and_prints_the_model_training_page(store):
    """`cpabanim ui` prints the page of the project's runs in MLflow's model-training layout (MLflow 3 opens the
    GenAI layout unless the address asks), then serves the store; with Chromium, the page lists the runs."""
    port = _free_port()
    cli = Path(sys.executable).with_name("cpabanim")
    command = [
        str(cli),
        "ui",
        "--params",
        str(PROJECT_ROOT / "params.yaml"),
        "--set",
        f"tracking.uri={store['uri']}",
        "--port",
        str(port),
    ]
    log_path = store["root"] / "ui.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below, after the server is gone
    process = subprocess.Popen(command, cwd=store["root"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process, log_path)
        page = f"{base}/#/experiments/{store['experiment_id']}/runs?workflowType=machine_learning"
        assert page in log_path.read_text()
        browser = _chromium()
        if browser is not None:
            dom = _dump_dom(browser, page)
            # the runs table with the experiment's parent run; the GenAI layout opens on a traces overview instead
            assert "matching run" in dom and EXPERIMENT in dom
    finally:
        _stop_group(process)
        log.close()


def test_cpabanim_ui_without_a_store_says_so_in_one_line(tmp_path):
    cli = Path(sys.executable).with_name("cpabanim")
    result = subprocess.run(
        [
            str(cli),
            "ui",
            "--params",
            str(PROJECT_ROOT / "params.yaml"),
            "--set",
            f"tracking.uri=sqlite:///{tmp_path / 'none.db'}",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    assert result.returncode != 0 and "no MLflow store" in result.stderr and not (tmp_path / "none.db").exists()
    assert len(result.stderr.strip().splitlines()) == 1
