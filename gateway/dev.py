"""``callback-gateway dev``: the whole stack on one machine, with no outside service.

Children (sandbox, server, worker) run as separate processes, each told to die with this one
(PR_SET_PDEATHSIG), and are stopped in reverse order on Ctrl-C / SIGTERM: no orphans.
"""

from __future__ import annotations

import os
import secrets
import signal
import string
import subprocess
import sys
import time
from typing import Any

import httpx

from gateway.embedded_redis import EmbeddedRedis, die_with_parent, free_port
from gateway.settings import Settings


def _auth_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "MA" + "".join(secrets.choice(alphabet) for _ in range(18))


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        preexec_fn=die_with_parent,
        start_new_session=True,  # Ctrl-C reaches dev only; dev stops the children in order
    )


def _wait_http(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a child exited early ({proc.args!r})")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


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


def _banner(port: int, sandbox_port: int, redis_url: str, key: str) -> str:
    base = f"http://127.0.0.1:{port}"
    body = (
        '{"resource": "Message/", "params": {"src": "14155550100", "dst": "14155550123", '
        '"text": "hello"}, "metadata": {"order_id": 42}}'
    )
    auth = f'-H "Authorization: Bearer {key}"'
    submit = f"curl -s -X POST {base}/v1/requests {auth} -H 'Content-Type: application/json' -d '{body}'"
    extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"api_id\"])'"
    return "\n".join(
        [
            "callback-gateway dev is up",
            f"  gateway   {base}   (receiver {base}/callbacks/plivo)",
            f"  sandbox   http://127.0.0.1:{sandbox_port}   (stands in for api.plivo.com)",
            f"  redis     {redis_url}",
            f"  API key   {key}",
            "",
            "Submit an async request:",
            f"  {submit}",
            "",
            "Or submit and read its status a moment later:",
            f"  API_ID=$({submit} | {extract}); sleep 1; curl -s {base}/v1/requests/$API_ID {auth}",
            "",
            "Ctrl-C stops everything.",
        ]
    )


def run_dev(port: int) -> int:
    settings = Settings()
    explicit_redis = "REDIS_URL" in settings.model_fields_set
    embedded = None if explicit_redis else EmbeddedRedis().start()
    redis_url = settings.REDIS_URL if embedded is None else embedded.url
    key = (
        settings.GATEWAY_API_KEYS[0].get_secret_value()
        if settings.GATEWAY_API_KEYS
        else ("cgk_" + secrets.token_urlsafe(24))
    )
    auth_id = settings.PLIVO_AUTH_ID or _auth_id()
    token = settings.PLIVO_AUTH_TOKEN.get_secret_value() or secrets.token_urlsafe(30)
    sandbox_port = free_port()
    env: dict[str, Any] = {
        **os.environ,
        "REDIS_URL": redis_url,
        "PLIVO_AUTH_ID": auth_id,
        "PLIVO_AUTH_TOKEN": token,
        "PLIVO_API_URL": f"http://127.0.0.1:{sandbox_port}",
        "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_API_KEYS": key,
        "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
        # lets `dev` issue drop-in proxy tokens (POST /v1/proxy_tokens)
        "GATEWAY_PROXY_TOKEN_SECRET": settings.GATEWAY_PROXY_TOKEN_SECRET.get_secret_value()
        or secrets.token_urlsafe(32),
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
    }
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        procs.append(_spawn(["sandbox", "--port", str(sandbox_port)], env))
        procs.append(_spawn(["worker"], env))
        procs.append(_spawn(["serve", "--port", str(port)], env))
        _wait_http(f"http://127.0.0.1:{sandbox_port}/_sandbox/requests", procs)
        _wait_http(f"http://127.0.0.1:{port}/healthz", procs)
        print(_banner(port, sandbox_port, redis_url, key), flush=True)
        while not stopping:
            if any(p.poll() is not None for p in procs):
                print("a component exited; stopping", file=sys.stderr)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        _stop(procs)
        if embedded is not None:
            embedded.cleanup()
