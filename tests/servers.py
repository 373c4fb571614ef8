"""Throwaway PostgreSQL and Redis servers for the tests, on loopback, private ports, no saved data.

The tests start the servers themselves: PostgreSQL with ``initdb`` + ``pg_ctl`` (as the ``postgres``
user when the tests run as root, since PostgreSQL refuses to run as root) in a temporary data
folder with its socket in a temporary folder; Redis with ``redis-server --save ""`` on
127.0.0.1. Each server listens on 127.0.0.1 only, on a port picked free at start.

Without the binaries the tests that need a server skip, saying how to install them; with
``CI=true`` they fail instead, so CI never silently skips them. ``FSAGA_PG_BIN`` names a folder
holding ``initdb``/``pg_ctl`` when they are not on ``PATH`` or in Debian's versioned folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "PostgresServer",
    "RedisServer",
    "free_port",
    "missing",
    "postgres_server",
    "redis_server",
]

POSTGRES_HINT = (
    "PostgreSQL's initdb/pg_ctl were not found: install Debian's `postgresql` package "
    "(`apt-get install -y postgresql`), or set FSAGA_PG_BIN to the folder holding them"
)
REDIS_HINT = "redis-server was not found: install Debian's `redis-server` package"


def missing(reason: str) -> None:
    """Skip the test for a missing server binary, or fail under CI, where nothing may skip."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _postgres_bin() -> Path | None:
    candidates: list[str] = []
    if configured := os.environ.get("FSAGA_PG_BIN"):
        candidates.append(configured)
    if found := shutil.which("pg_ctl"):
        candidates.append(str(Path(found).resolve().parent))
    candidates.extend(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


@dataclass(frozen=True, slots=True)
class PostgresServer:
    """A running throwaway PostgreSQL server.

    Attributes:
        port: its TCP port on 127.0.0.1.
        data: its data folder.
        bin: the folder of its binaries.
        user: the operating-system user it runs as (``None``: the tests' own user).
    """

    port: int
    data: Path
    bin: Path
    user: str | None

    @property
    def dsn(self) -> str:
        """The connection string of the ``postgres`` database as the ``postgres`` role."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def dsn_for(self, database: str) -> str:
        """The connection string of another database on this server."""
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl`` on this server's data folder (as its user)."""
        return _run(self.user, [str(self.bin / "pg_ctl"), "-D", str(self.data), *args], check)

    def stop(self) -> None:
        """Stop the server at once (``-m fast``): connections are cut, data is kept."""
        self.pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        """Start the server again on the same port and data folder."""
        options = f"-p {self.port} -h 127.0.0.1 -k {self.data} -c fsync=on"
        self.pg_ctl("-w", "-l", str(self.data / "server.log"), "-o", options, "start")

    def restart(self) -> None:
        """Stop and start again: every connection is cut."""
        self.stop()
        self.start()


def _run(user: str | None, command: list[str], check: bool) -> subprocess.CompletedProcess[str]:
    if user is not None:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, check=check, capture_output=True, text=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server; stop it and delete its data on exit."""
    folder = _postgres_bin()
    if folder is None:
        missing(POSTGRES_HINT)
        raise AssertionError("unreachable")
    user: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing("the tests run as root and there is no `postgres` user to run PostgreSQL as")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="fsaga-pg-"))
    data = root / "data"
    try:
        data.mkdir()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            os.chown(data, entry.pw_uid, entry.pw_gid)
        _run(
            user,
            [
                str(folder / "initdb"),
                "-D",
                str(data),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
        )
        server = PostgresServer(free_port(), data, folder, user)
        server.start()
        try:
            yield server
        finally:
            server.pg_ctl("-m", "immediate", "-w", "stop", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running throwaway Redis server.

    Attributes:
        port: its TCP port on 127.0.0.1.
    """

    port: int

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Start a throwaway Redis server (nothing saved to disk); stop it on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing(REDIS_HINT)
        raise AssertionError("unreachable")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fsaga-redis-") as folder:
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                folder,
                "--loglevel",
                "notice",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_until_ready(process)
            yield RedisServer(port)
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


def _wait_until_ready(process: subprocess.Popen[str]) -> None:
    # Reads the server's log until it says it accepts connections: readiness, never a guess.
    assert process.stdout is not None
    seen: list[str] = []
    for line in process.stdout:
        seen.append(line)
        if "Ready to accept connections" in line:
            # Nobody reads the log from here on: discard it so the server never blocks on it.
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return
    raise RuntimeError(f"redis-server exited before it was ready: {''.join(seen[-5:])}")
