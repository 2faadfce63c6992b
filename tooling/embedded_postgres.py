"""A private PostgreSQL on a free loopback port, for ``dev`` and the test suite.

Uses ``initdb``/``postgres`` from PATH, else from Debian's ``/usr/lib/postgresql/<version>/bin``,
else the binaries shipped in the ``pgserver`` wheel. The cluster lives in a temporary directory
(unless one is given), listens on 127.0.0.1 only, trusts local connections (it is private), and
keeps no fsync: a test or dev database, not a production one. PostgreSQL refuses to run as root;
when we are root, the cluster is created and run as ``nobody``. The server dies with its parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import asyncpg

from tooling.embedded_redis import die_with_parent, free_port

SUPERUSER = "gateway"
DATABASE = "gateway"


def wheel_bin_dir() -> Path:
    """The binaries of the ``pgserver`` wheel (the fallback for machines without PostgreSQL)."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a dependency
        raise RuntimeError("no PostgreSQL on PATH and the pgserver wheel is missing") from exc
    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def postgres_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``postgres``: PATH, Debian's, else the wheel's."""
    found = shutil.which("postgres")
    if found and (Path(found).parent / "initdb").exists():
        return Path(os.path.realpath(found)).parent
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: p.parent.parent.name)
    if debian:
        return debian[-1].parent
    return wheel_bin_dir()


def _run_as() -> str | None:
    """The user to run PostgreSQL as: ``nobody`` when we are root (PostgreSQL refuses root)."""
    return "nobody" if os.geteuid() == 0 else None


def _child_setup(nice: int) -> None:
    die_with_parent()
    if nice:
        os.nice(nice)


class EmbeddedPostgres:
    def __init__(
        self,
        port: int | None = None,
        *,
        directory: str | None = None,
        bin_dir: Path | None = None,
        nice: int = 0,
    ) -> None:
        """``nice``: the server's CPU priority (its backends inherit it); the bench lowers it so
        that a PostgreSQL sharing the gateway's cores stands in for one on a host of its own."""
        self.port = port or free_port()
        self.nice = nice
        self.bin_dir = bin_dir
        self._dir_obj: tempfile.TemporaryDirectory[str] | None = None
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None
        self._created = directory is not None and (Path(directory) / "data" / "PG_VERSION").exists()

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def data_dir(self) -> Path:
        assert self.directory is not None
        return Path(self.directory) / "data"

    def start(self, timeout: float = 30.0) -> EmbeddedPostgres:
        if self.directory is None:
            self._dir_obj = tempfile.TemporaryDirectory(prefix="cg-postgres-")
            self.directory = self._dir_obj.name
        user = _run_as()
        if user is not None:
            os.chmod(self.directory, 0o755)  # noqa: S103 (PostgreSQL runs as nobody in it)
            shutil.chown(self.directory, user)
        bin_dir = self.bin_dir or postgres_bin_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--no-sync",
                    "--no-locale",
                    "-E",
                    "UTF8",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                user=user,
                cwd=self.directory,
            )
        self.process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=128MB",
                "-c",
                "log_min_messages=warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(Path(self.directory) / "postgres.log", "ab"),  # noqa: SIM115 (the child owns it)
            preexec_fn=functools.partial(_child_setup, self.nice),
            start_new_session=True,
            user=user,
            cwd=self.directory,
        )
        self._wait_ready(timeout)
        if not self._created:
            self.create_database(DATABASE)
            self._created = True
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                self.execute("SELECT 1", database="postgres")
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not answer on port {self.port}: {self.log_tail()}")

    def execute(self, statement: str, *, database: str = DATABASE) -> None:
        """Run one statement (from synchronous code: fixtures, ``dev``), in a thread of its own so
        that it works whether or not the caller runs an event loop."""

        async def run() -> None:
            conn = await asyncpg.connect(self.url(database), timeout=2)
            try:
                await conn.execute(statement)
            finally:
                await conn.close()

        failure: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """A new database (a copy of ``template`` if given); returns its URL."""
        clause = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}', database="postgres")
        return self.url(name)

    def log_tail(self, lines: int = 20) -> str:
        if self.directory is None:
            return ""
        log = Path(self.directory) / "postgres.log"
        if not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """A fast shutdown (SIGINT: abort transactions, then a clean stop)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        if self._dir_obj is not None:
            self._dir_obj.cleanup()
            self._dir_obj = None

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
