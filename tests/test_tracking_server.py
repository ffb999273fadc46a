"""A shared tracking server (issue 22): `cpabanim tracking-server` on a real PostgreSQL (tests/services/postgres.py),
and stage runs of several concurrent processes logging to it as jobs on several machines would.

The jobs share the server but no lock file: each process has a temp folder of its own (the lock of a server's URI
lives there), and each one's first search for a parent and for a seed run is held until every process has
searched, so that every one of them creates its own: the worst case of the race. Afterwards the store has exactly
one parent per experiment and one run per (experiment, seed), the twins deleted, and every stage run with its
params, metric and artifact, in PostgreSQL and the artifacts folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from cpabanim.tracking.provenance import TAG_EXPERIMENT, TAG_ROLE, TAG_SEED

from .conftest import PROJECT_ROOT
from .services.http import wait_until_answering
from .services.postgres import PostgresServer, free_port, postgres_server_fixture  # noqa: F401 (postgres_server)

CLI = Path(sys.executable).with_name("cpabanim")
EXPERIMENT = "shared-server"
PIPELINE = "snakemake-4242-shared"
# (experiment, seed) of each concurrent stage process: two parents raced by two processes each, one seed run too
JOBS = (("a", 0), ("a", 0), ("b", 0), ("b", 1))

JOB = (
    """
import sys, time
from pathlib import Path
from cpabanim import tracking
from cpabanim.config.layers import load_params
from cpabanim.tracking import runs, store

params_file, experiment, seed, sync, jobs, me = sys.argv[1:7]
searched = set()
search = store.active_runs

def held(uri, experiment_id, identity):
    # the first search for each kind of run waits until every job has made it: all of them then create
    found = search(uri, experiment_id, identity)
    role = identity["cpabanim.role"]
    if role not in searched:
        searched.add(role)
        Path(sync, f"{role}-{me}").touch()
        deadline = time.monotonic() + 60
        while len(list(Path(sync).glob(f"{role}-*"))) < int(jobs) and time.monotonic() < deadline:
            time.sleep(0.02)
    return found

store.active_runs = held
params = {**load_params(params_file), "experiment": experiment, "seed": int(seed)}
params["tracking"] = {**params["tracking"], "experiment": "%s"}
with runs.stage_context("train", params, used={"seed": int(seed), "job": me}, seeded=True):
    tracking.log_metrics({"loss": 0.25 + int(me)}, step=1)
    Path(f"job-{me}.txt").write_text(me)
    tracking.log_artifact(Path(f"job-{me}.txt"), "outputs")
"""
    % EXPERIMENT
)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (mlflow server and its workers), SIGKILL to what is left after 3 s
    (its workers' graceful shutdown would wait for idle connections)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=3)
    with contextlib.suppress(ProcessLookupError):  # the leader's children too, whether or not it has exited
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def tracking_server(postgres_server: PostgresServer, tmp_path_factory):
    """`cpabanim tracking-server` over a new database, its URI given in the environment; yields (base URL, database
    URI, artifacts folder, server log)."""
    root = tmp_path_factory.mktemp("tracking-server")
    database = postgres_server.create_database("mlflow")
    port = free_port()
    log_path = root / "server.log"
    command = [str(CLI), "tracking-server", "--port", str(port), "--workers", "2", "--artifacts-destination", "art"]
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": database}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{base}/health", process, log_path, "cpabanim tracking-server", timeout=120)
        yield base, database, root / "art", log_path
    finally:
        stop_group(process)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_database_that_refuses_is_one_line_naming_the_fix():
    uri = f"postgresql://someone:s3cret-pw@127.0.0.1:{free_port()}/mlflow"
    out = run_cli("tracking-server", "--backend-store-uri", uri)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"cpabanim tracking-server: error: PostgreSQL at 127.0.0.1:{uri.rsplit(':', 1)[1].split('/')[0]} refused "
        "the connection: start it, or check --backend-store-uri"
    ]


def test_a_missing_database_or_a_wrong_password_is_one_line_without_the_password(postgres_server: PostgresServer):
    missing = run_cli("tracking-server", "--backend-store-uri", postgres_server.uri("nosuchdb"))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert f"has no database 'nosuchdb': create it (createdb -h 127.0.0.1 -p {postgres_server.port}" in missing.stderr
    wrong = postgres_server.uri().replace(postgres_server.password, "not-the-password")
    refused = run_cli("tracking-server", "--backend-store-uri", wrong)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "refused the credentials of user 'cpabanim'" in refused.stderr and "not-the-password" not in refused.stderr
    sqlite = run_cli("tracking-server", "--backend-store-uri", "sqlite:///mlflow.db")
    assert sqlite.returncode == 1 and "run `cpabanim ui`" in sqlite.stderr


def launch_jobs(root: Path, base: str) -> list[subprocess.Popen]:
    """The concurrent stage processes of :data:`JOBS`, each in a folder and with a temp folder of its own."""
    sync = root / "sync"
    sync.mkdir()
    procs = []
    for number, (experiment, seed) in enumerate(JOBS):
        node = root / f"node{number}"
        (node / "tmp").mkdir(parents=True)
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": base,
            "CPABANIM_PIPELINE_RUN": PIPELINE,
            "TMPDIR": str(node / "tmp"),  # another machine: another lock file (store.lock_path)
        }
        args = [str(PROJECT_ROOT / "params.yaml"), experiment, str(seed), str(sync), str(len(JOBS)), str(number)]
        procs.append(
            subprocess.Popen([sys.executable, "-c", JOB, *args], cwd=node, env=env, stderr=subprocess.PIPE, text=True)
        )
    return procs


def by_role(client, experiment_id: str, role: str, deleted: bool = False) -> list:
    from mlflow.entities import ViewType

    view = ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY
    return client.search_runs([experiment_id], f"tags.`{TAG_ROLE}` = '{role}'", run_view_type=view)


def test_concurrent_jobs_log_every_run_once_through_the_server(tracking_server, tmp_path):
    import mlflow
    import psycopg2

    base, database, artifacts, server_log = tracking_server
    procs = launch_jobs(tmp_path, base)
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
    client = mlflow.MlflowClient(tracking_uri=base)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id

    parents = {run.data.tags[TAG_EXPERIMENT]: run for run in by_role(client, experiment_id, "pipeline")}
    assert len(by_role(client, experiment_id, "pipeline")) == len(parents) == 2
    # every job created a parent: the twins of the one kept were deleted by their jobs
    assert Counter(r.data.tags[TAG_EXPERIMENT] for r in by_role(client, experiment_id, "pipeline", True)) == {
        "a": 1,
        "b": 1,
    }
    for parent in parents.values():
        assert parent.info.status == "FINISHED" and parent.data.tags["stage.train"] == "finished"
        assert parent.data.params["train.num_epochs"]  # the experiment's params, logged once by its creator

    seeds = by_role(client, experiment_id, "seed")
    keys = Counter((r.data.tags[TAG_EXPERIMENT], r.data.tags[TAG_SEED]) for r in seeds)
    assert keys == {("a", "0"): 1, ("b", "0"): 1, ("b", "1"): 1}
    assert [r.data.tags[TAG_SEED] for r in by_role(client, experiment_id, "seed", True)] == ["0"]  # a's twin
    seed_of = {(r.data.tags[TAG_EXPERIMENT], r.data.tags[TAG_SEED]): r for r in seeds}
    for (experiment, _), run in seed_of.items():
        assert run.data.tags["mlflow.parentRunId"] == parents[experiment].info.run_id
        assert run.data.params == {"seed": run.data.tags[TAG_SEED]}

    stages = by_role(client, experiment_id, "stage")
    assert sorted(r.data.params["job"] for r in stages) == ["0", "1", "2", "3"]
    for run in stages:
        job = run.data.params["job"]
        experiment, seed = JOBS[int(job)]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == seed_of[(experiment, str(seed))].info.run_id
        assert run.data.params == {"seed": str(seed), "job": job}
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [(m.value, m.step) for m in history] == [(0.25 + int(job), 1)]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "outputs")] == [f"outputs/job-{job}.txt"]
        local = client.download_artifacts(run.info.run_id, f"outputs/job-{job}.txt", str(tmp_path))
        assert Path(local).read_text() == job

    assert sorted(p.read_text() for p in artifacts.rglob("job-*.txt")) == ["0", "1", "2", "3"]  # served, stored
    with psycopg2.connect(database, connect_timeout=5) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT lifecycle_stage, count(*) FROM runs GROUP BY lifecycle_stage")
        assert dict(cursor.fetchall()) == {"active": 2 + 3 + 4, "deleted": 2 + 1}
    password = database.split(":")[2].split("@")[0]
    assert password not in server_log.read_text() and "MLFLOW_TRACKING_URI=http://127.0.0.1:" in server_log.read_text()
