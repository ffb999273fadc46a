"""The MLflow UI opens every artifact of a run (issues 11 and 20, docs/pipeline.md "MLflow", docs/data.md "Names").

MLflow's artifact endpoint answers 400 "Invalid path" for a path with ``#``, the field's (FOMM / TPSMM) part
separator in video names (``id10001#7w0IBEWc9Qw#000993#001143``). Videos, pairs and folders are named by
:func:`cpabanim.data.names.safe_name` (``astronaut.test003``) and every upload goes through
:func:`cpabanim.tracking.safe_artifact_name` (a folder file by file), so no artifact path can carry one.

- A small store logged through the report's own code (``store``): its media are served by ``/get-artifact``.
- A real tiny pipeline run (the Snakemake run of tests/pipeline/test_e2e.py, whose
  ``test_every_artifact_of_the_run_opens_in_the_mlflow_ui`` calls the ``check_*`` functions here, so that one
  pipeline run serves both): every artifact of every run, listed recursively through the REST API
  (``/api/2.0/mlflow/artifacts/list``), ``explain/`` included, has a safe path, is fetched (HTTP 200, its size,
  the right magic bytes), and with a Chromium installed (Debian: ``apt-get install chromium``; ``.ci/run``
  installs it) every image among them is opened in the UI's artifact view by one headless browser, driven over
  its DevTools pipe, which must show it decoded.

MLflow's server forks workers that survive SIGTERM to the parent: the whole process group is stopped at the end.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
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
from .services.chromium import DevTools, chromium
from .services.http import wait_until_answering

EXPERIMENT = "ui-check"
MAGIC = {".gif": (b"GIF87a", b"GIF89a"), ".png": (b"\x89PNG\r\n\x1a\n",), ".mp4": (b"ftyp",)}
IMAGES = (".png", ".gif")  # what the UI's artifact view shows as an <img>
SAFE_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


def _frames(count: int = 3, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _write_png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_frames(1)[0]).resize((64, 64)).save(path)
    return path


def _experiment_files(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The per-experiment paths and report outputs ``parents.log_experiment`` logs, with video names as the data
    stages make them (``clip.test000``) and one from a dataset preprocessed before the safe names
    (``legacy#test009``), which the upload must still make safe."""
    from cpabanim.data.frames import write_viewing_videos

    out = root / "outputs" / EXPERIMENT
    recon, anim = out / "reconstruction", out / "animation"
    write_viewing_videos(_frames(), recon / "clip.test000", fps=5, mp4=True, gif=True)
    write_viewing_videos(_frames(), recon / "legacy#test009", fps=5, mp4=False, gif=True)
    write_viewing_videos(_frames(), anim / "000_clip.test000_to_other.test001" / "relative", fps=5, mp4=True, gif=True)
    (out / "metrics.json").write_text(json.dumps({"recon/l1": 0.1}))
    (out / "metrics_per_video.csv").write_text("part,video,l1\nreconstruction,clip.test000,0.1\n")
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


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    """A sqlite store with one experiment parent run holding the report's artifacts (logged by the report); made
    once for the module: the tests only read it."""
    from cpabanim.config.layers import load_params
    from cpabanim.reporting import parents
    from cpabanim.tracking import provenance, runs

    tmp_path = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(tmp_path)  # MLflow puts a sqlite store's artifacts under ./mlruns
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        monkeypatch.delenv(provenance.PIPELINE_RUN_ENV, raising=False)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        overrides = [f"tracking.uri={uri}", f"paths.processed={tmp_path / 'processed'}"]
        params = load_params(PROJECT_ROOT / "params.yaml", overrides=overrides)
        paths, outputs = _experiment_files(tmp_path)
        run_id = runs.experiment_parent(params, EXPERIMENT)
        seed_run = runs.experiment_seed_run(params, run_id, EXPERIMENT, 0)
        parents.log_seed_run(seed_run, EXPERIMENT, 0, {"recon/l1": 0.1}, paths, log_model=False)
        parents.log_experiment(run_id, EXPERIMENT, {"recon/l1": 0.1, "recon/l1/n": 1.0}, paths, outputs)
        client = runs.mlflow_client()
        experiment_id = client.get_run(run_id).info.experiment_id
        artifacts = _artifacts(client, run_id)
    return {"uri": uri, "run_id": run_id, "experiment_id": experiment_id, "artifacts": artifacts, "root": tmp_path}


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for info in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, info.path) if info.is_dir else [info.path]
    return files


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _mlflow_server(uri: str, root: Path):
    """``mlflow server`` on a free port over the store ``uri`` (artifact paths relative to ``root``); yields its base
    URL; stops its whole process group."""
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below, after the server is gone
    command = [str(mlflow), "server", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    # one worker and no GenAI job runners, as `cpabanim ui` starts it (cpabanim/commands/tracking_server.exec_mlflow)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [*command, "--workers", "1"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{base}/health", process, root / "server.log", "mlflow server", timeout=90)
        yield base
    finally:
        _stop_group(process)
        log.close()


@pytest.fixture(scope="module")
def server(store):
    """One ``mlflow server`` over the store for the module's tests that read through it."""
    with _mlflow_server(store["uri"], store["root"]) as base:
        yield base


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


def _api(base: str, endpoint: str, query: dict | None = None, body: dict | None = None) -> dict:
    """One call of MLflow's REST API (``/api/2.0/mlflow/<endpoint>``): GET with ``query``, or POST of ``body``."""
    url = f"{base}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _artifact_url(base: str, run_id: str, path: str) -> str:
    return f"{base}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})


def test_media_artifacts_are_logged_under_names_the_ui_accepts(store):
    media = [p for p in store["artifacts"] if Path(p).suffix in MAGIC]
    assert {
        "reconstruction/clip.test000.gif",
        "reconstruction/clip.test000.mp4",
        "reconstruction/legacy_test009.gif",  # a name from before the safe names is made safe on upload
        "animation/000_clip.test000_to_other.test001/relative.gif",
        "report/metrics_png.png",
    } <= set(media)
    assert all(SAFE_PATH.fullmatch(p) for p in store["artifacts"]), store["artifacts"]


def test_every_media_artifact_is_served_by_the_ui_endpoint(store, server):
    media = [p for p in store["artifacts"] if Path(p).suffix in MAGIC]
    for path in media:
        status, body = _get(_artifact_url(server, store["run_id"], path))
        assert status == 200, (path, body[:300])
        assert any(magic in body[:12] for magic in MAGIC[Path(path).suffix]), path
    # why the names are made safe: the same endpoint refuses a '#' in the path
    status, _ = _get(_artifact_url(server, store["run_id"], "reconstruction/legacy#test009.gif"))
    assert status == 400


def test_a_logged_folder_is_uploaded_under_safe_names(tmp_path, monkeypatch):
    """``tracking.log_artifact`` of a folder (reconstruct's ``explain/``) puts each file under its safe path, also
    for names made before the safe names; a single file too."""
    from cpabanim import tracking
    from cpabanim.config.layers import load_params
    from cpabanim.tracking import provenance, runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv(provenance.PIPELINE_RUN_ENV, raising=False)
    params = load_params(PROJECT_ROOT / "params.yaml")
    folder = tmp_path / "explain"
    for relative in ("astronaut.test003/overview.png", "old#name/flow.png", "old#name/a b?.png"):
        _write_png(folder / relative)
    with runs.stage_context("reconstruct", params, used={}) as run:
        tracking.log_artifact(folder, "explain")
        tracking.log_artifact(folder / "old#name" / "a b?.png")
    logged = _artifacts(runs.mlflow_client(), run.info.run_id)
    assert sorted(logged) == [
        "a_b_.png",
        "explain/astronaut.test003/overview.png",
        "explain/old_name/a_b_.png",
        "explain/old_name/flow.png",
    ]


@pytest.mark.skipif(chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_the_ui_artifact_view_renders_gif_and_png_artifacts(store, server, tmp_path):
    """The UI fetches each file through /get-artifact and shows it as an <img> of a blob URL (a message on an
    error): waited for in real time, not in a virtual-time budget that a loaded machine can run out of."""
    browser = DevTools(chromium(), tmp_path / "chromium.log")
    run_page = f"{server}/#/experiments/{store['experiment_id']}/runs/{store['run_id']}"
    try:
        for path in (
            "reconstruction/clip.test000.gif",
            "animation/000_clip.test000_to_other.test001/relative.gif",
            "report/samples_png.png",
        ):
            shown = _shown(browser, run_page, path)
            assert shown["decoded"] and not shown["refused"], (path, shown)
    finally:
        browser.close()


def test_cpabanim_ui_serves_the_store_and_prints_the_model_training_page(store):
    """`cpabanim ui` prints the page of the project's runs in MLflow's model-training layout (MLflow 3 opens the
    GenAI layout unless the address asks), then serves the store; with Chromium, the page lists the runs. A SIGTERM
    stops it whole."""
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
        wait_until_answering(f"{base}/health", process, log_path, "mlflow server", timeout=90)
        page = f"{base}/#/experiments/{store['experiment_id']}/runs?workflowType=machine_learning"
        assert page in log_path.read_text()
        if chromium() is not None:
            browser = DevTools(chromium(), store["root"] / "chromium.log")
            try:
                _wait_for_the_runs_table(browser, page, store["root"], log_path)
            finally:
                browser.close()
        # stopped as a service manager or `kill` stops it: SIGTERM to the command alone, and nothing it started
        # (MLflow's uvicorn worker, its job runners) is left holding the port
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(process.pid), "processes of `cpabanim ui` outlived its SIGTERM"
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as err:
                pytest.fail(f"port {port} still held after `cpabanim ui` stopped on SIGTERM: {err}")
    finally:
        _stop_group(process)
        log.close()


def _wait_for_the_runs_table(browser: DevTools, page: str, root: Path, server_log: Path) -> None:
    """Open ``page`` until it shows the runs table with the experiment's parent run (the GenAI layout opens on a
    traces overview instead); a failure says what the page showed (its text, a screenshot) and which requests the
    server refused."""
    text = "(document.body ? document.body.innerText : '')"  # null while it loads
    browser.call("Page.navigate", url=page)
    try:
        browser.wait_for(f"{text}.includes('matching run') && {text}.includes('{EXPERIMENT}')", timeout=90)
    except pytest.fail.Exception:
        screenshot = browser.screenshot(root / "runs-page.png")
        refused = [line for line in server_log.read_text().splitlines() if re.search(r'" [45]\d\d\b', line)]
        pytest.fail(
            f"the runs page showed no runs table in 90 s ({screenshot}); its text:\n"
            f"{(browser.evaluate(text) or '')[:1500]}\nrequests the server refused:\n" + "\n".join(refused[-20:])
        )


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


# ---------------------------------------------------------------------------------------------------------
# A real pipeline run: every artifact of every run


@contextlib.contextmanager
def served_pipeline_runs(root: Path):
    """The MLflow store of a finished pipeline run in ``root`` (tests/pipeline/test_e2e.py's Snakemake run), served
    by ``mlflow server``; yields the base URL, the project root and every run of the store with its artifacts
    (REST API, recursively)."""
    with _mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root) as base:
        experiments = _api(base, "experiments/search", body={"max_results": 1000})["experiments"]
        ids = [e["experiment_id"] for e in experiments]
        found = _api(base, "runs/search", body={"experiment_ids": ids, "max_results": 1000}).get("runs", [])
        runs = [
            {
                "id": r["info"]["run_id"],
                "experiment_id": r["info"]["experiment_id"],
                "name": r["info"].get("run_name", ""),
                "artifacts": _listed_artifacts(base, r["info"]["run_id"]),
            }
            for r in found
        ]
        yield {"base": base, "root": root, "runs": runs}


def _listed_artifacts(base: str, run_id: str, path: str = "") -> list[dict]:
    """``{"path", "file_size"}`` of every file under ``path`` of a run, as the UI lists them
    (``/api/2.0/mlflow/artifacts/list``, one folder at a time)."""
    answer = _api(base, "artifacts/list", query={"run_id": run_id, **({"path": path} if path else {})})
    files = []
    for entry in answer.get("files", []):
        if entry.get("is_dir"):
            files += _listed_artifacts(base, run_id, entry["path"])
        else:
            files.append({"path": entry["path"], "file_size": int(entry.get("file_size", -1))})
    return files


def _all_paths(pipeline_run: dict) -> list[tuple[dict, str]]:
    return [(r, a["path"]) for r in pipeline_run["runs"] for a in r["artifacts"]]


def check_every_artifact_has_a_safe_path_and_is_served(pipeline_run: dict) -> None:
    """Called by tests/pipeline/test_e2e.py on its Snakemake run's store (one pipeline run for both checks)."""
    base, runs = pipeline_run["base"], pipeline_run["runs"]
    assert len(runs) >= 9, [r["name"] for r in runs]  # the experiment's parent and its eight stages
    paths = [path for _, path in _all_paths(pipeline_run)]
    assert not [p for p in paths if "#" in p]
    assert not [p for p in paths if not SAFE_PATH.fullmatch(p)]
    # the explanation of the first test video, the reconstruction and animation previews and the report's media
    reconstruct = next(r for r in runs if r["name"] == "reconstruct")
    explained = [a["path"] for a in reconstruct["artifacts"] if a["path"].startswith("explain/")]
    assert {Path(p).name for p in explained} >= {"overview.png", "flow.png", "keypoints.png"}, explained
    assert any("." in Path(p).parent.name for p in explained), "a video name with its parts joined by '.'"
    assert any(p.startswith("animation/") and p.endswith(".gif") for p in paths)
    for run, artifact in ((r, a) for r in runs for a in r["artifacts"]):
        status, body = _get(_artifact_url(base, run["id"], artifact["path"]))
        assert status == 200, (run["name"], artifact["path"], body[:300])
        assert artifact["file_size"] in (-1, len(body)), artifact
        suffix = Path(artifact["path"]).suffix.lower()
        if suffix in MAGIC:
            assert any(magic in body[:12] for magic in MAGIC[suffix]), artifact["path"]
        elif suffix == ".json":
            json.loads(body)


# the UI's artifact view shows an image as an <img alt="<path>" src="blob:..."> (fetched through /get-artifact)
SHOWN_IMAGES = (
    "JSON.stringify({images: [...document.images].map(i => [i.alt, i.src.slice(0, 5), i.complete && i.naturalWidth]),"
    " refused: document.body.innerText.includes('Invalid path'), hash: location.hash})"
)


def _shown(browser: DevTools, run_page: str, path: str, timeout: float = 60) -> dict:
    """Open the artifact view of ``path`` of the run at ``run_page`` and wait until its image is decoded; returns
    what the page showed (its images, whether it refused the path). The run's page comes first: the artifact view
    keeps its selected file when only the file in the address changes."""
    browser.call("Page.navigate", url=run_page)
    time.sleep(0.5)
    browser.call("Page.navigate", url=f"{run_page}/artifacts/{path}")
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(browser.evaluate(SHOWN_IMAGES) or "{}")
        decoded = any(alt == path and src == "blob:" and width for alt, src, width in state.get("images", []))
        if decoded or state.get("refused") or time.monotonic() > deadline:
            return {**state, "decoded": decoded}
        time.sleep(0.25)


def check_the_ui_shows_every_image(pipeline_run: dict, tmp_path: Path) -> None:
    """An image of every kind, opened in the UI's artifact view and decoded: one per (run name, folder, format),
    ``explain/`` included; a screenshot of the explanation's overview is kept (``overview-in-the-ui.png``). The
    other images of a folder, and a stage's runs of other experiments and seeds, hold paths of the same shape, and
    every one of them is served (:func:`check_every_artifact_has_a_safe_path_and_is_served`)."""
    base = pipeline_run["base"]
    kinds = {}
    # the overview first, so that it is its folder's image
    for run, path in sorted(_all_paths(pipeline_run), key=lambda item: not item[1].endswith("/overview.png")):
        kinds.setdefault((run["name"], str(Path(path).parent), Path(path).suffix.lower()), (run, path))
    images = [(run, path) for run, path in kinds.values() if Path(path).suffix.lower() in IMAGES]
    assert len(images) >= 6, images
    browser = DevTools(chromium(), tmp_path / "chromium.log")
    try:
        failed = {}
        for run, path in images:
            shown = _shown(browser, f"{base}/#/experiments/{run['experiment_id']}/runs/{run['id']}", path)
            if not shown["decoded"]:
                failed[f"{run['name']}: {path}"] = shown
            if path.endswith("/overview.png") and path.startswith("explain/"):
                screenshot = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
                (tmp_path / "overview-in-the-ui.png").write_bytes(screenshot)
        assert not failed, failed
    finally:
        browser.close()
    assert (tmp_path / "overview-in-the-ui.png").stat().st_size > 10_000
