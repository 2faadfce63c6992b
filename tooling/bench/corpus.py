"""Signed callbacks for the load generators, as Plivo sends them (form-encoded POST, V3 signed).

Every callback is distinct (its own ``api_id`` and nonce) so that none is a duplicate: a
duplicate is acknowledged without being stored and would flatter the ingest figure. They are
signed once here, before any timing starts, and written to a file of tab-separated lines
``path, signature, nonce, body`` that wrk's Lua script and the Python generator both read.
"""

from __future__ import annotations

import multiprocessing
import secrets
import uuid
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from gateway.domain.signing import sign_v3

RECEIVER_PATH = "/callbacks/plivo"
CONTENT_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Callback:
    api_id: str
    path: str
    signature: str
    nonce: str
    body: str

    def line(self) -> str:
        return f"{self.path}\t{self.signature}\t{self.nonce}\t{self.body}\n"


def payload(api_id: str) -> dict[str, str]:
    """An async API result for a call, about the size Plivo sends (~250 B form-encoded)."""
    return {
        "api_id": api_id,
        "message": "call fired",
        "request_uuid": str(uuid.uuid4()),
        "From": "14155550100",
        "To": "14155550123",
        "Direction": "outbound",
        "CallStatus": "in-progress",
    }


def signed(public_url: str, token: str, api_id: str, ref: str = "") -> Callback:
    path = RECEIVER_PATH + (f"?cg_ref={ref}" if ref else "")
    params = payload(api_id)
    nonce = str(secrets.randbelow(10**20))
    signature = sign_v3("POST", public_url + path, params, nonce, token)
    return Callback(api_id, path, signature, nonce, urlencode(params))


def build(public_url: str, token: str, api_ids: Iterable[str]) -> list[Callback]:
    return [signed(public_url, token, a, ref=secrets.token_hex(6)) for a in api_ids]


def fresh_ids(count: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(count)]


def _lines(job: tuple[str, str, list[str]]) -> str:
    public_url, token, api_ids = job
    return "".join(cb.line() for cb in build(public_url, token, api_ids))


def make_file(path: Path, public_url: str, token: str, api_ids: list[str], procs: int) -> Path:
    """Sign one callback per ``api_id`` (line i is ``api_ids[i]``), in ``procs`` processes."""
    chunk = max(1000, len(api_ids) // (procs * 4) + 1)
    jobs = [(public_url, token, api_ids[i : i + chunk]) for i in range(0, len(api_ids), chunk)]
    ctx = multiprocessing.get_context("spawn")
    with path.open("w", encoding="ascii") as out:
        if procs <= 1 or len(jobs) == 1:
            out.writelines(_lines(job) for job in jobs)
        else:
            with ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
                out.writelines(pool.map(_lines, jobs))
    return path


def raw_request(line: str, host: str) -> bytes:
    """One corpus line as the bytes of an HTTP/1.1 keep-alive request."""
    path, signature, nonce, body = line.rstrip("\n").split("\t", 3)
    data = body.encode("ascii")
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {CONTENT_TYPE}\r\n"
        f"Content-Length: {len(data)}\r\nX-Plivo-Signature-V3: {signature}\r\n"
        f"X-Plivo-Signature-V3-Nonce: {nonce}\r\n\r\n"
    )
    return head.encode("ascii") + data
