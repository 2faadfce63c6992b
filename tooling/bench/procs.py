"""The processes under test: started like production starts them, stopped in reverse order.

Each child dies with the bench (PR_SET_PDEATHSIG) and sits in its own session so a terminal
Ctrl-C reaches the bench only, which then stops the children itself. Their output goes to log
files in the run's directory (named in errors) so that it costs no terminal I/O.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tooling.embedded_redis import die_with_parent


class Children:
    """Every child of one bench run; ``stop_all`` (or leaving the ``with``) stops them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.procs)):
            self.stop(proc)

    def __enter__(self) -> Children:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def pids(self, name: str) -> list[int]:
        """The running children called ``name``."""
        return [p.pid for n, p in self.procs if n == name and p.poll() is None]

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time the processes ``pids`` have used so far (Linux ``/proc``), or None
    when there is none to read (no pids, no ``/proc``, a process gone)."""
    if not pids or not Path("/proc/self/stat").exists():
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            return None
        # Fields after the command name (which may hold spaces and parentheses): state is field 3,
        # utime and stime fields 14 and 15 (proc(5)).
        fields = stat.rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def children(pids: list[int], marker: str) -> list[int]:
    """The processes whose parent is one of ``pids`` and whose command line holds ``marker``."""
    parents = {str(p) for p in pids}
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc/self").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] in parents and marker in cmdline:
            found.append(int(entry.name))
    return found


GATEWAY_FACTORY = "gateway.cli:app_from_env"


def uvicorn_args(factory: str, port: int, workers: int) -> list[str]:
    """``callback-gateway serve``'s uvicorn settings, for any app factory."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return [
        "-m",
        "uvicorn",
        factory,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        loop,
        "--http",
        http,
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def wait_http(children: Children, name: str, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    procs = [p for n, p in children.procs if n == name]
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{name} exited early:\n{children.log_tail(name)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not answer {url} within {timeout:.0f}s:\n{children.log_tail(name)}")


def serve(
    children: Children, name: str, factory: str, port: int, workers: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    if factory == GATEWAY_FACTORY:
        # The gateway exactly as `callback-gateway serve` runs it (gateway.api.serving: its HTTP
        # protocol with the header deadline, the connection cap), not uvicorn's own command.
        args = ["-m", "gateway.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = children.spawn(name, [*args, "--workers", str(workers)], env)
    else:
        proc = children.spawn(name, uvicorn_args(factory, port, workers), env)
    health = "/_stats" if name == "subscriber" else "/healthz"
    wait_http(children, name, f"http://127.0.0.1:{port}{health}")
    return proc
