"""A tracking store that cannot be used fails a stage in one line, before any work (issue 24): a server nobody
listens on (MLflow's client would retry for about four minutes, then print a traceback) and a sqlite file cut
short or overwritten (an SQLAlchemy traceback from the first stage). Through the CLI, as a job runs a stage:
``cpabanim download``, the cheapest stage, which opens its MLflow run before it downloads anything."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cpabanim.errors import ConfigError
from cpabanim.tracking import store

from .conftest import PROJECT_ROOT

CLI = Path(sys.executable).with_name("cpabanim")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def download(cwd: Path, uri: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``cpabanim download`` in ``cwd`` logging to ``uri``; the result and how long it took."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    started = time.monotonic()
    out = subprocess.run(
        [str(CLI), "download", "--params", str(PROJECT_ROOT / "params.yaml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out, time.monotonic() - started


def one_error_line(out: subprocess.CompletedProcess[str], cwd: Path) -> str:
    """The one line the stage printed (it failed, without a traceback and before downloading anything)."""
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert not (cwd / "data").exists()  # no work was done
    return lines[0]


def test_a_server_nobody_listens_on_is_one_line_within_seconds(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    out, seconds = download(tmp_path, uri)
    line = one_error_line(out, tmp_path)
    assert seconds < 30
    assert line == (
        f"cpabanim download: error: tracking server {uri} is not reachable (connection refused): start it "
        "(cpabanim tracking-server ...) or unset MLFLOW_TRACKING_URI / set tracking.enabled: false"
    )


def mlflow_store(path: Path) -> Path:
    """A real MLflow sqlite store with an experiment and a run (a file of many pages)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    run = client.create_run(client.create_experiment("x"))
    for step in range(50):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    return path


def test_a_sqlite_store_cut_short_is_one_line(tmp_path):
    database = mlflow_store(tmp_path / "mlflow.db")
    size = database.stat().st_size
    with database.open("r+b") as handle:
        handle.truncate(size // 2)
    out, _ = download(tmp_path, f"sqlite:///{database}")
    line = one_error_line(out, tmp_path)
    assert line.startswith(f"cpabanim download: error: tracking store {database} is corrupt (")
    assert "move it away to start a fresh store" in line


def test_a_sqlite_store_of_random_bytes_is_one_line(tmp_path):
    database = tmp_path / "mlflow.db"
    database.write_bytes(os.urandom(8192))
    out, _ = download(tmp_path, f"sqlite:///{database}")
    assert one_error_line(out, tmp_path) == (
        f"cpabanim download: error: {database} is not an SQLite database (corrupt?): "
        "move it away to start a fresh store (or restore it from a backup)"
    )


def test_a_new_or_empty_sqlite_store_passes_the_check(tmp_path):
    store.check_sqlite(tmp_path / "none.db")  # a fresh store: MLflow creates it
    (tmp_path / "empty.db").touch()
    store.check_sqlite(tmp_path / "empty.db")
    store.check_sqlite(mlflow_store(tmp_path / "mlflow.db"))


class Unavailable(http.server.BaseHTTPRequestHandler):
    """A proxy whose tracking server is down: 503 to everything."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_a_server_that_answers_5xx_is_refused_and_passwords_are_masked():
    assert store.masked("postgresql://u:secret@db:5432/mlflow") == "postgresql://u:***@db:5432/mlflow"
    assert store.masked("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match=r"tracking server http://u:\*\*\*@127.0.0.1:\d+ is not reachable"):
        store.check_server(f"http://u:secret@127.0.0.1:{free_port()}", timeout=3)
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match="answered HTTP 503 to /health"):
            store.check_server(f"http://127.0.0.1:{proxy.server_address[1]}", timeout=3)
    finally:
        proxy.shutdown()
        proxy.server_close()
