"""The delivery baseline: one process POSTing the worker's webhooks to the subscriber, nothing else.

The delivery figure depends on the host as much as on the worker, so the same run also measures
how fast a bare client gets through the same work on the same machine: one separate Python process
on uvloop (like the worker), aiohttp with the worker's connection limit and session settings
(``gateway.services.netguard.WebhookClient``, copied rather than imported so that a slower client shows up
in the ratio instead of in both figures), POSTing bodies and headers the worker would send (the
event envelope of the bench's callbacks, ``webhook-*`` headers signed with a ``whsec_`` secret) to
the same subscriber, with no Redis. Bodies are built and signed before the clock starts: the
baseline is the HTTP exchange alone, and the ratio is what the worker's correlate + emit + sign +
record cost on top of it.

The bench runs it as a child process (``run``) that writes its JSON answer to a file; the child
itself is ``main`` (``python -m tooling.bench.bareclient``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from gateway.domain.callbacks import callback_id, classify, parse_form
from gateway.domain.events import Event, event_id_for
from gateway.domain.signing import new_webhook_secret, webhook_headers
from gateway.settings import Settings
from gateway.store.delivery import encode_event
from tooling.bench import corpus
from tooling.bench.bulk import metadata_of
from tooling.bench.options import require_loopback
from tooling.bench.procs import Children

MAX_S = 30.0  # the baseline stops here even when it has requests left
STARTUP_S = 30.0  # imports and building the bodies, before the clock starts
Request = tuple[bytes, dict[str, str]]


def concurrency(env: dict[str, str]) -> int:
    """The worker's connection limit (and inbox concurrency) under ``env``."""
    default = Settings.model_fields["WORKER_CONCURRENCY"].default
    return int(env.get("WORKER_CONCURRENCY") or default)


def webhook(api_id: str, secret: str, metadata_bytes: int) -> Request:
    """The body and headers the worker sends for the bench's callback about ``api_id``."""
    params = corpus.payload(api_id)
    cb_id = callback_id("", params)
    kind = classify(cb_id, params, parse_form(b"")).event_type
    at = int(time.time() * 1000)
    event = Event.new(event_id_for(cb_id), kind, at, api_id, metadata_of(metadata_bytes, 42), params)
    body = encode_event(event.to_json()).encode("utf-8")
    return body, webhook_headers([secret], event.id, body, int(time.time()))


def _session(limit: int) -> aiohttp.ClientSession:
    """``WebhookClient``'s session, less the SSRF resolver (the subscriber is an IP literal, which
    aiohttp connects to without resolving)."""
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=10, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=10.0),
        auto_decompress=False,
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=("Accept-Encoding", "Accept", "User-Agent"),
    )


async def _lane(
    session: aiohttp.ClientSession, url: str, todo: Iterator[Request], deadline: float, tally: list[int]
) -> None:
    """One of ``concurrency`` sequential senders sharing ``todo``; ``tally`` is [ok, failed]."""
    for body, headers in todo:
        if time.monotonic() > deadline:
            return
        try:
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.read()
                tally[response.status != 200] += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            tally[1] += 1


async def blast(url: str, requests: list[Request], limit: int, seconds: float) -> dict[str, Any]:
    """Send ``requests`` over ``limit`` connections until done or ``seconds`` have passed."""
    tally = [0, 0]
    todo = iter(requests)
    async with _session(limit) as session:
        cpu, began = time.process_time(), time.perf_counter()
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(_lane(session, url, todo, deadline, tally) for _ in range(limit)))
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    body_bytes = sum(len(b) for b, _ in requests) / max(len(requests), 1)
    ok, failed = tally
    return summary(ok, failed, elapsed, cpu, limit, body_bytes)


def summary(
    ok: int, failed: int, elapsed: float, cpu: float, limit: int, body_bytes: float
) -> dict[str, Any]:
    """A run's figures: ``elapsed`` and ``cpu`` in seconds, ``body_bytes`` the mean body size."""
    return {
        "requests": ok + failed,
        "ok": ok,
        "failed": failed,
        "elapsed_s": round(elapsed, 3),
        "per_s": round(ok / elapsed, 1) if elapsed > 0 else 0.0,
        "concurrency": limit,
        "cpu_us_per_request": round(cpu * 1e6 / max(ok + failed, 1), 1),
        "body_bytes": round(body_bytes, 1),
    }


def _loop_factory() -> Any:
    """uvloop, as ``callback-gateway worker`` runs on (it comes with uvicorn[standard])."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(children: Children, url: str, count: int, limit: int, metadata_bytes: int) -> dict[str, Any]:
    """Run the baseline in its own process and return its figures (blocking: call it in a thread)."""
    out = children.workdir / "bareclient.json"
    out.unlink(missing_ok=True)
    args = ["-m", "tooling.bench.bareclient", "--url", url, "--count", str(count)]
    args += ["--concurrency", str(limit), "--metadata-bytes", str(metadata_bytes), "--out", str(out)]
    proc = children.spawn("bareclient", args, dict(os.environ))
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(MAX_S + STARTUP_S)
    finally:
        children.stop(proc)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"the bare client failed:\n{children.log_tail('bareclient')}")
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tooling.bench.bareclient")
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=MAX_S)
    parser.add_argument("--metadata-bytes", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    require_loopback(args.url)
    secret = new_webhook_secret()
    requests = [webhook(a, secret, args.metadata_bytes) for a in corpus.fresh_ids(args.count)]
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        result = runner.run(blast(args.url, requests, args.concurrency, args.seconds))
    args.out.write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
