"""``callback-gateway dev``: the whole stack on one machine, with no outside service.

Children (sandbox, server, worker) run as separate processes, each told to die with this one
(PR_SET_PDEATHSIG), and are stopped in reverse order on Ctrl-C / SIGTERM: no orphans.

Development defaults give way to the environment only, not to a ``.env`` file: a ``.env`` copied
from ``.env.example`` names the production Redis and grace, which ``dev`` must not use.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import string
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import httpx

from gateway.cli.config import mask_url
from gateway.domain.signing import new_webhook_secret
from gateway.settings import Settings
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis, die_with_parent, free_port

# Seconds a callback nobody submitted waits before it becomes callback.unmatched: short, so the
# walkthrough shows one within seconds (production's default is 300).
DEV_UNMATCHED_GRACE = 5


class ChildFailed(Exception):
    """A child process exited, or did not come up in time."""


@dataclass(frozen=True, slots=True)
class DevStack:
    """What ``dev`` runs and what a newcomer needs to talk to it."""

    port: int
    sandbox_port: int
    redis_url: str
    embedded_redis: bool
    database_url: str
    embedded_postgres: bool
    api_key: str
    auth_id: str
    auth_token: str
    webhook_secret: str
    proxy_token_secret: str
    unmatched_grace: int
    worker_metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def child_env(self) -> dict[str, str]:
        """The children's environment: this one, with the stack's values winning over ``.env``."""
        return {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "PLIVO_AUTH_ID": self.auth_id,
            "PLIVO_AUTH_TOKEN": self.auth_token,
            "PLIVO_API_URL": self.sandbox_url,
            "GATEWAY_PUBLIC_URL": self.url,
            "GATEWAY_API_KEYS": self.api_key,
            "GATEWAY_WEBHOOK_SECRET": self.webhook_secret,
            "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
            "GATEWAY_UNMATCHED_GRACE": str(self.unmatched_grace),
            "WORKER_METRICS_PORT": str(self.worker_metrics_port),
            # lets `dev` issue drop-in proxy tokens (POST /v1/proxy_tokens)
            "GATEWAY_PROXY_TOKEN_SECRET": self.proxy_token_secret,
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
        }


def _auth_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "MA" + "".join(secrets.choice(alphabet) for _ in range(18))


def plan(settings: Settings, port: int, worker_metrics_port: int) -> DevStack:
    """The stack's values: the settings' where given, generated ones otherwise. The Redis and
    PostgreSQL URLs are filled in once the embedded servers run (``REDIS_URL`` and ``DATABASE_URL``
    from the environment are used as they are)."""
    keys = settings.GATEWAY_API_KEYS
    grace = os.environ.get("GATEWAY_UNMATCHED_GRACE")
    secret = settings.GATEWAY_WEBHOOK_SECRET
    return DevStack(
        port=port,
        sandbox_port=free_port(),
        redis_url=os.environ.get("REDIS_URL", ""),
        embedded_redis=not os.environ.get("REDIS_URL"),
        database_url=os.environ.get("DATABASE_URL", ""),
        embedded_postgres=not os.environ.get("DATABASE_URL"),
        api_key=keys[0].get_secret_value() if keys else "cgk_" + secrets.token_urlsafe(24),
        auth_id=settings.PLIVO_AUTH_ID or _auth_id(),
        auth_token=settings.PLIVO_AUTH_TOKEN.get_secret_value() or secrets.token_urlsafe(30),
        webhook_secret=secret.get_secret_value() if secret else new_webhook_secret(),
        proxy_token_secret=settings.GATEWAY_PROXY_TOKEN_SECRET.get_secret_value()
        or secrets.token_urlsafe(32),
        unmatched_grace=settings.GATEWAY_UNMATCHED_GRACE if grace else DEV_UNMATCHED_GRACE,
        worker_metrics_port=worker_metrics_port,
    )


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        preexec_fn=die_with_parent,
        start_new_session=True,  # Ctrl-C reaches dev only; dev stops the children in order
    )


def _exited(procs: dict[str, subprocess.Popen[bytes]]) -> ChildFailed | None:
    for name, proc in procs.items():
        if proc.poll() is not None:
            return ChildFailed(f"the {name} exited with status {proc.returncode} (its output is above)")
    return None


def _wait_http(url: str, procs: dict[str, subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        failed = _exited(procs)
        if failed is not None:
            raise failed
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ChildFailed(f"{url} did not answer within {timeout:.0f} s")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in reversed(procs):
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


SANDBOX_KNOBS = (
    ("delay", "seconds before the callback is sent [0.05]"),
    ("callback_first", "true: the callback arrives before the submit's reply (an early callback)"),
    ("duplicates", "extra copies of each callback (the gateway delivers one event)"),
    ("signature", "auto | v3 | v2 | none | bad (none and bad: the receiver answers 403)"),
    ("replies", 'canned replies for the next requests, e.g. [{"status": 400, "executed": true}]'),
    ("encoding", "form | json: how callbacks are encoded"),
    ("status_callbacks", "false: no message status callbacks (queued, sent, delivered)"),
    ("status_spacing", "seconds before each status callback (default 0: a burst right after the result)"),
    ("reset", "true: every knob back to its default, the sandbox's history cleared"),
)


def _rows(rows: list[tuple[str, str, str]]) -> list[str]:
    return [f"  {name:<17} {value}   {note}".rstrip() for name, value, note in rows]


def banner(stack: DevStack) -> str:
    base, sandbox = stack.url, stack.sandbox_url
    auth = f'-H "Authorization: Bearer {stack.api_key}"'
    body = (
        '{"resource": "Message/", "params": {"src": "14155550100", "dst": "14155550123", '
        '"text": "hello"}, "metadata": {"order_id": 42}}'
    )
    submit = f"curl -s -X POST {base}/v1/requests {auth} -H 'Content-Type: application/json' -d '{body}'"
    extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"api_id\"])'"
    metrics = f"http://127.0.0.1:{stack.worker_metrics_port}/metrics" if stack.worker_metrics_port else "off"
    where = "embedded, gone when dev stops" if stack.embedded_redis else "REDIS_URL from the environment"
    where_pg = (
        "embedded, gone when dev stops" if stack.embedded_postgres else "DATABASE_URL from the environment"
    )
    exports = (
        f"export GW={base} SANDBOX={sandbox} KEY={stack.api_key} "
        f"AUTH_ID={stack.auth_id} AUTH_TOKEN={stack.auth_token}"
    )
    lines = [
        "callback-gateway dev is up",
        *_rows(
            [
                ("gateway", base, "API, /docs and /metrics"),
                ("receiver", f"{base}/callbacks/plivo", "where the sandbox sends its callbacks"),
                ("sandbox", sandbox, "stands in for api.plivo.com (knobs below)"),
                ("redis", stack.redis_url, where),
                ("postgresql", mask_url(stack.database_url), where_pg + " (history)"),
                (
                    "worker metrics",
                    metrics,
                    "" if stack.worker_metrics_port else "(dev --worker-metrics-port)",
                ),
                ("API key", stack.api_key, "Authorization: Bearer <key> on /v1/"),
                ("PLIVO_AUTH_ID", stack.auth_id, "the sandbox's account"),
                ("PLIVO_AUTH_TOKEN", stack.auth_token, "the sandbox signs its callbacks with it"),
                ("webhook secret", stack.webhook_secret, "GATEWAY_WEBHOOK_SECRET: signs per-request targets"),
                ("private targets", "allowed", "webhooks to 127.0.0.1 work (GATEWAY_ALLOW_PRIVATE_WEBHOOKS)"),
                (
                    "unmatched grace",
                    f"{stack.unmatched_grace} s",
                    "then a callback nobody submitted is callback.unmatched (GATEWAY_UNMATCHED_GRACE)",
                ),
            ]
        ),
        "",
        f"Sandbox knobs: curl -s -X POST {sandbox}/_sandbox/config -H 'Content-Type: application/json' "
        """-d '{"delay": 5}'""",
        *(f"  {name:<17} {what}" for name, what in SANDBOX_KNOBS),
        f"  GET {sandbox}/_sandbox/requests and /_sandbox/callbacks: what it received and sent.",
        "",
        "Submit an async request:",
        f"  {submit}",
        "",
        "Or submit and read its status once the callback is in:",
        f"  API_ID=$({submit} | {extract}); curl -s '{base}/v1/requests/'$API_ID'?wait=5' {auth}",
        "",
        "docs/walkthrough.md goes on from here; it starts with pasting this line into a shell:",
        f"  {exports}",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def run_dev(settings: Settings, port: int, *, worker_metrics_port: int = 0) -> int:
    """Run the stack until Ctrl-C / SIGTERM (0) or until a child exits (1). The caller has
    checked the settings and that ``port`` (and the metrics port) can be listened on."""
    stack = plan(settings, port, worker_metrics_port)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with contextlib.ExitStack() as servers:  # stopped last, after the children
        try:
            stack = _start_servers(stack, servers)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            print(f"dev: cannot start the embedded servers: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            env = stack.child_env()
            procs["sandbox"] = _spawn(["sandbox", "--port", str(stack.sandbox_port)], env)
            procs["worker"] = _spawn(["worker"], env)
            procs["server"] = _spawn(["serve", "--port", str(port)], env)
            _wait_http(f"{stack.sandbox_url}/_sandbox/requests", procs)
            _wait_http(f"{stack.url}/healthz", procs)
            print(banner(stack), flush=True)
            while not stopping:
                failed = _exited(procs)
                if failed is not None:
                    raise failed
                time.sleep(0.2)
            return 0
        except ChildFailed as exc:
            print(f"dev: {exc}; stopping the rest", file=sys.stderr, flush=True)
            return 1
        finally:
            _stop(list(procs.values()))


def _start_servers(stack: DevStack, servers: contextlib.ExitStack) -> DevStack:
    """The embedded Redis and PostgreSQL that the environment does not name; ``servers`` stops them."""
    if stack.embedded_redis:
        stack = replace(stack, redis_url=servers.enter_context(EmbeddedRedis()).url)
    if stack.embedded_postgres:
        stack = replace(stack, database_url=servers.enter_context(EmbeddedPostgres()).url())
    return stack
