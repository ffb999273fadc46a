"""``cpabanim tracking-server``: one MLflow tracking server that the jobs of several machines log to, its runs in
PostgreSQL and its artifacts served by it (docs/pipeline.md, "A shared tracking server").

    cpabanim tracking-server --backend-store-uri postgresql://mlflow@dbhost/mlflow
    cpabanim tracking-server --artifacts-destination s3://bucket/mlflow --port 5001
    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000   # in the jobs' environment

It runs ``mlflow server`` on 127.0.0.1 unless ``--host`` says otherwise (the server has no authentication). The
database is tried first, with a short timeout, so that a stopped PostgreSQL, a wrong password or a missing
database is one line naming the fix instead of MLflow's traceback. The store's URI reaches ``mlflow server``
through ``MLFLOW_BACKEND_STORE_URI``, never its command line, where ``ps`` would show the password.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

from cpabanim.errors import ConfigError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
POSTGRES_SCHEMES = ("postgresql", "postgres")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend-store-uri",
        default=os.environ.get("MLFLOW_BACKEND_STORE_URI"),
        help="the PostgreSQL database of the runs, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB "
        "(default: $MLFLOW_BACKEND_STORE_URI; a password is better in ~/.pgpass)",
    )
    parser.add_argument(
        "--artifacts-destination",
        default="mlartifacts",
        help="where the server keeps the artifacts it receives: a folder or s3://... (default: ./mlartifacts)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=5000, help="port to serve on (default 5000)")
    parser.add_argument("--workers", type=int, default=None, help="server worker processes (MLflow's default: 4)")
    parser.add_argument(
        "--allowed-hosts",
        default=None,
        help="Host headers the server accepts, comma-separated (MLflow's default: localhost and private IPs)",
    )


def exec_mlflow(subcommand: str, backend_store_uri: str, host: str, port: int, *options: str) -> None:
    """Replace this process by ``mlflow <subcommand>`` on ``host:port`` over the store ``backend_store_uri``
    (``ui`` or ``server``: the one home of the command line both ``cpabanim ui`` and this command run). The
    store's URI goes through the environment, so that no password shows in the process list. MLflow's GenAI job
    runners (7 processes that evaluate traces) are off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise:
    this project logs training runs only, and the runners would start with the server and outlive a SIGTERM."""
    command = [sys.executable, "-m", "mlflow", subcommand, "--host", host, "--port", str(port), *options]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, "MLFLOW_BACKEND_STORE_URI": backend_store_uri}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, command, env)  # the server takes over this process (Ctrl-C stops it)


def libpq_uri(uri: str) -> str:
    """``uri`` as libpq reads it: SQLAlchemy's ``postgresql+psycopg2://`` names a driver libpq does not know."""
    scheme, rest = uri.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def check_backend_uri(uri: str | None) -> str:
    """The store's URI, refused in one line when absent or not PostgreSQL (the project's own sqlite store is
    served by ``cpabanim ui``)."""
    if not uri:
        raise ConfigError(
            "no backend store: pass --backend-store-uri postgresql://USER@HOST/DB or set MLFLOW_BACKEND_STORE_URI"
        )
    if urlsplit(uri).scheme.split("+", 1)[0] not in POSTGRES_SCHEMES:
        from cpabanim.tracking.store import masked

        raise ConfigError(
            f"--backend-store-uri {masked(uri)!r} is not a PostgreSQL database (postgresql://USER@HOST/DB); "
            "for the project's sqlite store, run `cpabanim ui`"
        )
    return uri


def postgres_problem(uri: str, message: str) -> str:
    """libpq's error, as one line naming the server and the fix (never the password)."""
    parts = urlsplit(uri)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    database = unquote(parts.path.lstrip("/")) or (parts.username or "")
    text = message.lower()
    if "refused" in text:
        return f"PostgreSQL at {where} refused the connection: start it, or check --backend-store-uri"
    if "timeout" in text or "timed out" in text:
        return f"PostgreSQL at {where} did not answer within {CONNECT_TIMEOUT_S} s: check the host, or the firewall"
    if "authentication failed" in text or "password" in text:
        return (
            f"PostgreSQL at {where} refused the credentials of user {parts.username!r}: "
            "check the user and password of --backend-store-uri (or ~/.pgpass)"
        )
    if "does not exist" in text and "database" in text:
        user = f" -U {parts.username}" if parts.username else ""
        return (
            f"PostgreSQL at {where} has no database {database!r}: create it "
            f"(createdb -h {parts.hostname or 'localhost'} -p {parts.port or 5432}{user} {database})"
        )
    first = message.strip().splitlines()[0] if message.strip() else "cannot connect"
    return f"PostgreSQL at {where}: {first}: check --backend-store-uri"


def check_database(uri: str) -> None:
    """Connect once with a short timeout: the fix for a database MLflow could not open, before it starts."""
    try:
        import psycopg2
    except ImportError:
        raise ConfigError("psycopg2 is not installed: pip install 'cpabanim[server]'") from None
    from cpabanim.tracking.store import masked

    try:
        psycopg2.connect(libpq_uri(uri), connect_timeout=CONNECT_TIMEOUT_S).close()
    except psycopg2.OperationalError as err:
        raise ConfigError(postgres_problem(uri, str(err).replace(uri, masked(uri)))) from None


def server_options(args: argparse.Namespace) -> list[str]:
    """``mlflow server``'s options besides the store, host and port: served artifacts, workers, allowed hosts."""
    destination = args.artifacts_destination
    if "://" not in destination:
        destination = str(Path(destination).resolve())
    options = ["--serve-artifacts", "--artifacts-destination", destination]
    if args.workers is not None:
        options += ["--workers", str(args.workers)]
    if args.allowed_hosts:
        options += ["--allowed-hosts", args.allowed_hosts]
    return options


def client_host(host: str) -> str:
    """The address the jobs use: this machine's name when the server listens on every interface."""
    import socket

    return socket.gethostname() if host in ("0.0.0.0", "::") else host


def run(args: argparse.Namespace) -> int:
    from cpabanim.tracking.store import masked

    uri = check_backend_uri(args.backend_store_uri)
    check_database(uri)
    if args.host not in LOOPBACK:
        log.warning(
            "serving on %s: the server has no authentication, whoever reaches the port can change runs", args.host
        )
    options = server_options(args)
    base = f"http://{client_host(args.host)}:{args.port}"
    print(
        f"MLflow tracking server on {base} (runs in {masked(uri)}, artifacts in {options[2]}); "
        f"the jobs log to it with MLFLOW_TRACKING_URI={base}",
        flush=True,
    )
    exec_mlflow("server", uri, args.host, args.port, *options)
    return 0  # not reached
