"""Real gateway processes for operations tests: ``python -m gateway.cli serve|worker`` on loopback.

Each process logs (JSON) to its own file, so tests can read what an operator would see.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from gateway.domain.signing import sign_v3
from tooling.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "proc-token-" + secrets.token_hex(12)
API_KEY = "proc-key-" + secrets.token_hex(12)
WEBHOOK_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class Procs:
    """Gateway processes sharing one environment; killed (and their logs kept) at ``close``."""

    env: dict[str, str]
    logdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @classmethod
    def build(cls, logdir: Path, redis_url: str, public_port: int, *, database: str, **extra: Any) -> Procs:
        """``database``: a PostgreSQL URL without query; the processes get a schema of their own."""
        prefix = f"p{secrets.token_hex(4)}"
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"{database}?search_path={prefix}",
            "GATEWAY_KEY_PREFIX": prefix + ":",
            "PLIVO_AUTH_ID": "MAPROCTEST0123456789",
            "PLIVO_AUTH_TOKEN": TOKEN,
            "GATEWAY_API_KEYS": API_KEY,
            "GATEWAY_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{public_port}",
            "GATEWAY_ALLOW_PRIVATE_WEBHOOKS": "true",
            "GATEWAY_RETRY_SCHEDULE": "0,0.5,1",
            "GATEWAY_OVERLOAD_FLOOR": "0.5",
            "WORKER_POLL_DELAY": "0.05",
            "WORKER_CLAIM_IDLE": "2",
            "GATEWAY_HISTORY_DELAY": "0.05",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "DEBUG",
        }
        env.update({k: str(v) for k, v in extra.items()})
        return cls(env, logdir)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.logdir / f"{name}-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", *args],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    def serve(self, port: int, *extra: str) -> subprocess.Popen[bytes]:
        proc = self._spawn("serve", ["serve", "--port", str(port), *extra])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}: {self.logs[-1].read_text()}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("serve did not come up")

    def worker(self) -> subprocess.Popen[bytes]:
        return self._spawn("worker", ["worker"])

    def all_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def signed_callback(public_url: str, params: dict[str, str], token: str = TOKEN) -> dict[str, Any]:
    """httpx arguments for a V3-signed, form-encoded Plivo callback (path /callbacks/plivo)."""
    url = public_url + "/callbacks/plivo"
    nonce = str(secrets.randbelow(10**20))
    headers = {
        "X-Plivo-Signature-V3": sign_v3("POST", url, params, nonce, token),
        "X-Plivo-Signature-V3-Nonce": nonce,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return {"content": urlencode(params).encode(), "headers": headers}


__all__ = ["API_KEY", "TOKEN", "WEBHOOK_SECRET", "Procs", "free_port", "signed_callback"]
