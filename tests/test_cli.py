"""The command line: `dev` brings the whole stack up and takes all of it down; `serve` refuses
to run unsafely."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gateway.embedded_redis import free_port

ROOT = Path(__file__).resolve().parent.parent


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "PLIVO_", "GATEWAY_"))}
    env.update(extra)
    return env


def test_dev_runs_everything_and_ctrl_c_leaves_no_orphan(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "dev", "--port", str(port)],
        cwd=tmp_path,  # no .env here
        env=clean_env(LOG_LEVEL="WARNING"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = []
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            banner.append(line)
            if "Ctrl-C stops everything" in line or not line:
                break
        text = "".join(banner)
        key = re.search(r"API key\s+(\S+)", text)
        assert key, text
        assert f"http://127.0.0.1:{port}" in text
        assert "curl -s -X POST" in text
        kids = children_of(proc.pid)
        assert len(kids) == 4  # redis-server, sandbox, worker, server
        auth = {"Authorization": f"Bearer {key.group(1)}"}
        base = f"http://127.0.0.1:{port}"
        body = {"resource": "Message/", "params": {"src": "1", "dst": "2", "text": "hi"}}
        submitted = httpx.post(f"{base}/v1/requests", json=body, headers=auth, timeout=10)
        assert submitted.status_code == 202, submitted.text
        api_id = submitted.json()["api_id"]
        status = {}
        for _ in range(100):
            status = httpx.get(f"{base}/v1/requests/{api_id}", headers=auth, timeout=5).json()
            if status["status"] == "completed":
                break
            time.sleep(0.1)
        assert status["status"] == "completed", status
        assert status["result"]["api_id"] == api_id
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        time.sleep(0.2)
        assert [k for k in kids if alive(k)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_without_api_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=clean_env(PLIVO_AUTH_TOKEN="t"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "GATEWAY_API_KEYS" in result.stderr


def test_invalid_configuration_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "worker"],
        cwd=tmp_path,
        env=clean_env(GATEWAY_RETRY_SCHEDULE="soon", PLIVO_AUTH_TOKEN="secret-value-xyz"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "GATEWAY_RETRY_SCHEDULE" in result.stderr
    assert "Traceback" not in result.stderr
    assert "secret-value-xyz" not in result.stderr


def test_server_processes_keep_their_imports_out_of_the_collector() -> None:
    """The worker and each API process call ``tune_gc`` once loaded (in a child here, to leave
    this process's collector alone): what is alive then is frozen, collections are rarer, and
    cyclic garbage made afterwards is still collected."""
    probe = (
        "import gc, weakref\n"
        "from gateway.cli import GC_THRESHOLDS, app_from_env\n"
        "app_from_env()\n"
        "frozen = gc.get_freeze_count()\n"
        "class Node: pass\n"
        "a, b = Node(), Node()\n"
        "a.other, b.other = b, a\n"
        "gone = weakref.ref(a)\n"
        "del a, b\n"
        "gc.collect()\n"
        "print(frozen > 10_000, gc.get_threshold() == GC_THRESHOLDS, gone() is None)\n"
    )
    env = {**os.environ, "PLIVO_AUTH_ID": "MAXXXXXXXXXXXXXXXXXX", "PLIVO_AUTH_TOKEN": "t" * 32}
    env["REDIS_URL"] = "redis://127.0.0.1:1/0"  # never connected to: building the app does not
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True"]
