"""The command line: `dev` brings the whole stack up and takes all of it down; `serve` refuses
to run unsafely; every command reports every settings problem at once, one line each; `serve`
and `worker` say where they listen and which Redis they use; help is whole at any width."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main

from gateway.history.migrate import migrations
from tests.support.receiver import WebhookReceiver
from tests.support.servers import ServerThread
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]


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
    prefixes = ("REDIS_", "PLIVO_", "GATEWAY_", "WORKER_", "DATABASE_", "LOG_", "COLUMNS")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
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
        assert len(kids) == 5  # redis-server, postgres, sandbox, worker, server
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


# --- the command line itself: --version, -h, help texts whole at any width ----------------------


def cli_run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30) -> Run:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


Run = subprocess.CompletedProcess[str]
COMMANDS = ("serve", "worker", "sandbox", "dev", "bench")


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    result = cli_run("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"callback-gateway {metadata.version('callback-gateway')}"


def test_h_is_help_everywhere(tmp_path: Path) -> None:
    for args in [(), *((name,) for name in COMMANDS)]:
        short, long = cli_run(*args, "-h", cwd=tmp_path), cli_run(*args, "--help", cwd=tmp_path)
        assert short.returncode == 0, (args, short.stderr)
        assert short.stdout == long.stdout
        assert "Usage: " in short.stdout


def words(text: str) -> str:
    return " ".join(text.split())


def test_every_help_text_is_shown_whole_at_80_columns(tmp_path: Path) -> None:
    """Each command's help and each option's help appear in full (wrapped, never cut), and no
    option shows a type such as ``<bool>``."""
    from gateway.cli import cli

    group = typer.main.get_command(cli)  # a click group (typer ships its own copy of click)
    commands: dict[str, Any] = getattr(group, "commands", {})
    env = clean_env(COLUMNS="80")
    top = cli_run("--help", cwd=tmp_path, env=env).stdout
    assert "``" not in top and "The ``callback-gateway`` command line" not in top
    assert words(group.help or "") in words(top)
    for name in COMMANDS:
        command = commands[name]
        assert command.help and len(command.help.split()) > 12, f"{name}: a real help text"
        assert words(command.help) in words(top) or words(command.help.split("\n\n")[0]) in words(top)
        shown = cli_run(name, "--help", cwd=tmp_path, env=env).stdout
        assert words(command.help) in words(shown), name
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{name} {param.opts}: no help text"
                assert words(param.help) in words(shown), (name, param.opts, shown)
        assert "<bool>" not in shown and "…" not in shown, shown
        assert max(len(line) for line in shown.splitlines()) <= 80, shown


# --- settings: every problem at once, one `NAME: message` line each, for every command ---------


def test_every_command_reports_every_bad_setting_at_once_without_a_traceback(tmp_path: Path) -> None:
    env = clean_env(GATEWAY_RETRY_SCHEDULE="soon", LOG_FORMAT="loud", PLIVO_AUTH_TOKEN="secret-value-xyz")
    for name in ("serve", "worker", "sandbox", "dev"):
        result = cli_run(name, cwd=tmp_path, env=env)
        assert result.returncode == 2, (name, result.stderr)
        assert re.search(r"^  GATEWAY_RETRY_SCHEDULE: item 1: ", result.stderr, re.M), (name, result.stderr)
        assert re.search(r"^  LOG_FORMAT: ", result.stderr, re.M), (name, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, name
        assert "secret-value-xyz" not in result.stderr, name
        assert "dev is up" not in result.stdout


def test_a_variable_that_is_no_setting_is_warned_about(tmp_path: Path) -> None:
    env = clean_env(GATEWAY_API_KEY="k" * 20, PLIVO_AUTH_ID="MA" + "X" * 18, PLIVO_AUTH_TOKEN="t" * 20)
    proc = popen("sandbox", "--port", str(free_port()), cwd=tmp_path, env=env)
    try:
        out = read_until(proc, lambda line: "GATEWAY_API_KEY " in line, timeout=20)
    finally:
        stop(proc)
    assert "warning: GATEWAY_API_KEY is not a setting" in out, out
    assert "did you mean GATEWAY_API_KEYS?" in out


def test_serve_reports_all_its_requirements_at_once(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(
        REDIS_URL="notaurl",
        GATEWAY_ADMIN_PORT=str(port),
        GATEWAY_TLS_CERT_FILE=str(tmp_path / "missing.pem"),
        GATEWAY_RETRY_SCHEDULE="-1",
    )
    result = cli_run("serve", "--port", str(port), cwd=tmp_path, env=env)
    assert result.returncode == 2
    for name in (
        "GATEWAY_RETRY_SCHEDULE",
        "GATEWAY_API_KEYS",
        "PLIVO_AUTH_TOKEN",
        "GATEWAY_ADMIN_PORT",
        "GATEWAY_TLS_CERT_FILE",
        "GATEWAY_TLS_KEY_FILE",
        "REDIS_URL",
    ):
        assert re.search(rf"^  {name}: \S", result.stderr, re.M), (name, result.stderr)
    assert "Traceback" not in result.stderr


def test_a_redis_url_that_is_no_url_is_one_line_for_serve_and_worker(tmp_path: Path) -> None:
    env = clean_env(REDIS_URL="notaurl", GATEWAY_API_KEYS="k" * 20, PLIVO_AUTH_TOKEN="t" * 20)
    for args in (["serve", "--port", str(free_port())], ["worker"]):
        result = cli_run(*args, cwd=tmp_path, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert re.search(r"^  REDIS_URL: \S", result.stderr, re.M), result.stderr
        assert "Traceback" not in result.stderr + result.stdout


# --- serve and worker say where they listen and which Redis they use; the worker waits for Redis


def read_until(proc: subprocess.Popen[str], done: Callable[[str], bool], timeout: float = 30) -> str:
    """Lines of ``proc``'s output until one satisfies ``done`` (or the output ends, or time runs out)."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if done(line):
            break
    return "".join(seen)


def popen(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return proc.returncode, out


def test_serve_logs_its_addresses_and_its_redis_with_the_password_masked(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    env = clean_env(
        REDIS_URL=f"redis://:s3cretpw@127.0.0.1:{free_port()}/0",  # nothing there: serve waits
        DATABASE_URL="postgresql://app:dbpassw0rd@db.internal:5432/gateway",
        GATEWAY_API_KEYS="k" * 20,
        PLIVO_AUTH_TOKEN="t" * 20,
        GATEWAY_ADMIN_PORT=str(admin),
        LOG_LEVEL="INFO",
    )
    proc = popen("serve", "--port", str(port), cwd=tmp_path, env=env)
    try:
        out = read_until(proc, lambda line: "serve_listening" in line)
        started = json.loads(out.splitlines()[-1])
        assert started["listen"] == f"http://127.0.0.1:{port}"
        assert started["admin"] == f"http://127.0.0.1:{admin}"
        assert started["redis"].startswith("redis://:****@127.0.0.1:")
        assert started["database"] == "postgresql://app:****@db.internal:5432/gateway"
    finally:
        _, rest = stop(proc)
    assert "s3cretpw" not in out + rest and "dbpassw0rd" not in out + rest


def test_the_default_redis_is_named_when_redis_url_is_not_set() -> None:
    from gateway.cli import state_in_use
    from gateway.settings import Settings

    default = state_in_use(Settings(_env_file=None))  # type: ignore[call-arg]
    assert default["redis"] == "redis://127.0.0.1:6379/0"
    assert "REDIS_URL is not set" in default["redis_from"]
    explicit = state_in_use(Settings(_env_file=None, REDIS_URL="redis://u:pw@h:1/2"))  # type: ignore[call-arg]
    assert explicit == {"redis": "redis://u:****@h:1/2"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:****@h:6379/0"),
        ("redis://user:p%40ss@h/0", "redis://user:****@h/0"),
        ("rediss://h:6380/2?password=abc&db=2", "rediss://h:6380/2?password=****&db=2"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("unix:///run/redis.sock?password=x", "unix:///run/redis.sock?password=****"),
        ("postgresql://app:pw@db:5432/gw", "postgresql://app:****@db:5432/gw"),
        ("redis://user@h/0", "redis://user@h/0"),
    ],
)
def test_urls_in_start_lines_have_their_passwords_masked(url: str, shown: str) -> None:
    from gateway.cli import mask_url

    assert mask_url(url) == shown


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_refuse_to_start_without_a_database(tmp_path: Path, command: str) -> None:
    env = clean_env(GATEWAY_API_KEYS="k" * 20, PLIVO_AUTH_TOKEN="t" * 20)
    result = (
        cli_run(command, "--port", str(free_port()), cwd=tmp_path, env=env)
        if command == "serve"
        else (cli_run(command, cwd=tmp_path, env=env))
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "DATABASE_URL" in line]
    assert len(lines) == 1 and lines[0].startswith("  DATABASE_URL: needed"), result.stderr
    assert "postgresql://" in lines[0] and "Traceback" not in result.stderr


def test_migrate_applies_the_schema_once_and_says_so(tmp_path: Path) -> None:
    with EmbeddedPostgres() as server:
        env = clean_env(DATABASE_URL=server.url())
        first = cli_run("migrate", cwd=tmp_path, env=env)
        again = cli_run("migrate", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    shipped = migrations()
    for migration in shipped:  # every one applied, in order, once
        assert re.search(rf"^applied {migration.version:04d}_{migration.name}$", first.stdout, re.M), (
            first.stdout
        )
    assert "applied" not in again.stdout
    latest = f"schema at version {shipped[-1].version}"
    assert first.stdout.splitlines()[-1] == again.stdout.strip() == latest


def test_migrate_without_a_reachable_database_exits_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://app:dbpassw0rd@127.0.0.1:{free_port()}/gateway"
    result = cli_run("migrate", cwd=tmp_path, env=clean_env(DATABASE_URL=url))
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.fullmatch(r"migrate: cannot reach DATABASE_URL: .+\n", result.stderr), result.stderr
    assert "dbpassw0rd" not in result.stdout + result.stderr


def test_a_worker_started_before_its_redis_waits_for_it_then_works(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = clean_env(
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        # Nothing listens there either: history waits for its PostgreSQL the same way.
        DATABASE_URL=f"postgresql://gateway@127.0.0.1:{free_port()}/gateway",
        WORKER_METRICS_PORT=str(metrics_port),
        LOG_LEVEL="INFO",
    )
    proc = popen("worker", cwd=tmp_path, env=env)
    try:
        waiting = read_until(proc, lambda line: line.count("redis_unavailable") and "retry_in_s" in line)
        waiting += read_until(proc, lambda line: "redis_unavailable" in line)
        assert waiting.count("redis_unavailable") >= 2, waiting
        assert proc.poll() is None, waiting
        starting = json.loads(next(line for line in waiting.splitlines() if "worker_starting" in line))
        assert starting["metrics"] == f"http://0.0.0.0:{metrics_port}/metrics"
        assert starting["redis"] == f"redis://127.0.0.1:{port}/0"
        with EmbeddedRedis(port=port):
            up = read_until(proc, lambda line: "worker_started" in line)
            assert "worker_started" in up, up
            code, rest = stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, rest
    assert "Traceback" not in waiting + up + rest


def test_a_worker_whose_redis_refuses_its_password_exits_with_one_line(tmp_path: Path) -> None:
    with EmbeddedRedis() as server:
        env = clean_env(
            REDIS_URL=f"redis://:wrongpassword@127.0.0.1:{server.port}/0",
            DATABASE_URL=f"postgresql://gateway@127.0.0.1:{free_port()}/gateway",
        )
        result = cli_run("worker", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^worker: AuthenticationError: ", result.stderr, re.M), result.stderr
    assert "Traceback" not in result.stderr and "wrongpassword" not in result.stdout + result.stderr


# --- dev: its ports first; a .env from .env.example; a banner with what a newcomer needs --------


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_dev_on_a_taken_port_says_so_and_starts_nothing(tmp_path: Path) -> None:
    other = http.server.HTTPServer(("127.0.0.1", 0), _Healthy)  # answers /healthz like a gateway
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    port = other.server_address[1]
    try:
        result = cli_run("dev", "--port", str(port), cwd=tmp_path, timeout=60)
    finally:
        other.shutdown()
        other.server_close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.search(rf"^  --port: cannot listen on 127.0.0.1:{port}: ", result.stderr, re.M), result.stderr
    assert "dev is up" not in result.stdout and "API key" not in result.stdout
    assert "Traceback" not in result.stderr


def banner_value(banner: str, label: str) -> str:
    found = re.search(rf"^  {re.escape(label)}\s+(\S+)", banner, re.M)
    assert found, (label, banner)
    return found.group(1)


def test_dev_starts_from_a_copied_env_example_and_its_banner_has_what_a_newcomer_needs(
    tmp_path: Path,
) -> None:
    """.env.example copied to .env, as it says (its REDIS_URL pointed at a port where nothing
    listens: dev must not use it, since it comes from .env and not from the environment)."""
    example = (ROOT / ".env.example").read_text()
    (tmp_path / ".env").write_text(re.sub(r"(?m)^REDIS_URL=.*$", "REDIS_URL=redis://127.0.0.1:1/0", example))
    port, metrics_port = free_port(), free_port()
    receiver = WebhookReceiver()
    hooks = ServerThread(receiver.app()).start()
    proc = popen(
        "dev", "--port", str(port), "--worker-metrics-port", str(metrics_port),
        cwd=tmp_path, env=clean_env(LOG_LEVEL="WARNING"),
    )  # fmt: skip
    try:
        banner = read_until(proc, lambda line: "Ctrl-C stops everything" in line, timeout=60)
        assert "dev is up" in banner, banner
        base = f"http://127.0.0.1:{port}"
        assert banner_value(banner, "gateway") == base
        assert banner_value(banner, "receiver") == f"{base}/callbacks/plivo"
        assert banner_value(banner, "redis") not in ("redis://127.0.0.1:1/0", "redis://127.0.0.1:6379/0")
        assert "private targets   allowed" in banner
        for knob in ("delay", "callback_first", "duplicates", "signature", "replies", "encoding"):
            assert re.search(rf"^  {knob}\s+\S", banner, re.M), knob
        key, secret = banner_value(banner, "API key"), banner_value(banner, "webhook secret")
        auth_id, token = banner_value(banner, "PLIVO_AUTH_ID"), banner_value(banner, "PLIVO_AUTH_TOKEN")
        sandbox = banner_value(banner, "sandbox")
        # The sandbox accepts the AUTH ID and token shown.
        direct = httpx.post(
            f"{sandbox}/v1/Account/{auth_id}/Message/", json={"dst": "1", "text": "x"}, auth=(auth_id, token)
        )
        assert direct.status_code == 200, direct.text
        # The worker's metrics are served where the banner says.
        metrics_url = banner_value(banner, "worker metrics")
        assert metrics_url == f"http://127.0.0.1:{metrics_port}/metrics"
        assert "callback_gateway_delivery_attempts" in httpx.get(metrics_url, timeout=5).text
        # A per-request webhook target is signed with the webhook secret shown.
        body = {
            "resource": "Call/",
            "params": {"from": "1", "to": "2", "answer_url": "https://example.com/a"},
            "targets": [{"type": "webhook", "url": f"{hooks.url}/hook"}],
        }
        auth = {"Authorization": f"Bearer {key}"}
        assert httpx.post(f"{base}/v1/requests", json=body, headers=auth, timeout=10).status_code == 202
        deadline = time.monotonic() + 15
        while not receiver.on("/hook") and time.monotonic() < deadline:
            time.sleep(0.05)
        got = receiver.on("/hook")[0]
        signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
        expected = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), signed, hashlib.sha256)
        assert f"v1,{base64.b64encode(expected.digest()).decode()}" in got.headers["webhook-signature"]
        code, rest = stop(proc)
        assert code == 0, rest
        assert "Traceback" not in banner + rest
    finally:
        hooks.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_tooling_commands_say_so_where_the_tooling_is_not_installed(tmp_path: Path) -> None:
    """The Docker image ships gateway/ and workers/ only: dev, sandbox and bench say why they
    cannot run instead of a traceback."""
    for name in ("dev", "sandbox", "bench"):
        code = (
            "import sys; sys.modules['tooling'] = None; "
            f"sys.argv = ['callback-gateway', {name!r}]; "
            "from gateway.cli import main; main()"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, (name, result.stderr)
        assert "developer tooling" in result.stderr
        assert "Traceback" not in result.stderr
