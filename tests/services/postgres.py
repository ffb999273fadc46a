"""A PostgreSQL server on 127.0.0.1 for the tests, from Debian's package (``postgresql``; 15 in bookworm): its
cluster made by ``initdb`` in a temporary folder, on a free port, no Unix socket.

The ``postgres_server`` fixture (session scope; a test module imports ``postgres_server_fixture``) starts it,
waits until it accepts connections, yields a :class:`PostgresServer` (its address, a superuser with a password,
a helper that creates a database) and stops it (SIGTERM: a fast shutdown), then removes its folder. Without the
binaries it skips, naming the package; it never installs anything itself.

What is configured, and why:

- The cluster's files belong to whoever runs the server. PostgreSQL refuses to run as root: under root (CI's
  container) the server runs as the ``postgres`` system user (``Popen(user=...)``), with its folder made by
  :func:`tempfile.mkdtemp` in the temp folder and given to that user (pytest's own temporary folders are private
  to root, so that user could not reach one); without such a user it skips.
- Password authentication over TCP (``scram-sha-256``): the URIs carry a password, as a real one would, and the
  tests check that no message shows it.
- ``fsync``, ``synchronous_commit`` and ``full_page_writes`` off: a test's data need not survive a power cut.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "postgresql"
SYSTEM_USER = "postgres"  # who runs the server when the tests run as root
SUPERUSER = "cpabanim"
BINARIES = ("initdb", "postgres")


def bin_dir() -> Path | None:
    """The folder of initdb and postgres: on PATH, else Debian's versioned folder (not on PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    return Path(folders[-1]) if folders else None


def missing_reason() -> str | None:
    """Why no server can start here (the skip's message), None when one can."""
    folder = bin_dir()
    if folder is None or any(not (folder / name).exists() for name in BINARIES):
        return f"PostgreSQL not installed (no initdb/postgres; Debian: apt-get install {PACKAGE})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            return f"running as root and no {SYSTEM_USER!r} user to run PostgreSQL as (apt-get install {PACKAGE})"
    return None


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    """A running server: its address, its superuser and password, its folder (the log, for failures)."""

    root: Path
    host: str
    port: int
    user: str
    password: str

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database ``name``; its URI."""
        import psycopg2

        connection = psycopg2.connect(self.uri(), connect_timeout=5)
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.uri(name)

    def log_tail(self, lines: int = 30) -> str:
        log = self.root / "postgres.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def as_server_user() -> dict:
    """``Popen`` keywords that run a command as the user who owns the cluster: ``postgres`` under root."""
    return {"user": SYSTEM_USER, "group": SYSTEM_USER} if os.geteuid() == 0 else {}


def initdb(root: Path, password: str) -> Path:
    """A new cluster in ``root/data`` whose superuser logs in with ``password``."""
    data = root / "data"
    secret = root / "password"
    secret.write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SYSTEM_USER)
        for path in (root, secret):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    command = [str(bin_dir() / "initdb"), "-D", str(data), "-U", SUPERUSER, f"--pwfile={secret}"]
    command += ["--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8", "--no-sync"]
    out = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=120, **as_server_user())
    secret.unlink()
    if out.returncode != 0:
        raise RuntimeError(f"initdb failed ({out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return data


def accepts_connections(server: PostgresServer) -> bool:
    import psycopg2

    try:
        psycopg2.connect(server.uri(), connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


def start(server: PostgresServer, data: Path) -> subprocess.Popen:
    """The server in the foreground, a child of this process (teardown stops exactly it), in a session of its
    own (a Ctrl-C to pytest reaches the teardown first); its log in ``root/postgres.log``."""
    settings = {
        "listen_addresses": server.host,
        "port": server.port,
        "unix_socket_directories": "",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": 50,
    }
    command = [str(bin_dir() / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        command += ["-c", f"{key}={value}"]
    log = (server.root / "postgres.log").open("w")
    with log:
        return subprocess.Popen(
            command, cwd=server.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **as_server_user()
        )


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """SIGINT: PostgreSQL's fast shutdown (clients disconnected); SIGKILL when it does not exit in ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_server(timeout: float = 60) -> Iterator[PostgresServer]:
    """A new cluster, started; yielded once it accepts connections; stopped and removed whatever happens."""
    root = Path(tempfile.mkdtemp(prefix="cpabanim-postgres-"))
    server = PostgresServer(root, "127.0.0.1", free_port(), SUPERUSER, secrets.token_hex(12))
    process = None
    try:
        data = initdb(root, server.password)
        process = start(server, data)
        deadline = time.monotonic() + timeout
        while not accepts_connections(server):
            if process.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {process.returncode}" if process.poll() is not None else f"not after {timeout} s"
                raise RuntimeError(f"local PostgreSQL: {why}\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", name="postgres_server")
def postgres_server_fixture() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session; skipped where PostgreSQL is not installed. A test module imports
    ``postgres_server_fixture`` and asks for ``postgres_server`` (the import's name differs from the argument's)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("psycopg2", reason="psycopg2 not installed (pip install 'cpabanim[server]')")
    with running_server() as server:
        yield server
