"""``serve`` at the edge, as a real process: slow clients are cut off, connections are capped, the
admin port keeps the API off the public listener, and a trailing-slash callback URL is served
without a Host-built redirect."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.procs import API_KEY, TOKEN, Procs, free_port, signed_callback
from tooling.embedded_postgres import EmbeddedPostgres
from tooling.embedded_redis import EmbeddedRedis

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def served(
    tmp_path: Path, redis_server: EmbeddedRedis, postgres_server: EmbeddedPostgres
) -> Iterator[tuple[Procs, int, int]]:
    public, admin = free_port(), free_port()
    procs = Procs.build(
        tmp_path,
        redis_server.url,
        public,
        database=postgres_server.url(),
        GATEWAY_ADMIN_PORT=admin,
        GATEWAY_HEADER_TIMEOUT=1,
        GATEWAY_MAX_CONNECTIONS=4,
        GATEWAY_READY_REQUIRES_WORKER="false",
    )
    try:
        procs.serve(public)
        yield procs, public, admin
    finally:
        procs.close()


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (recv gives b""), or None if it stayed open."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def test_slow_and_silent_clients_are_cut_off(served: tuple[Procs, int, int]) -> None:
    _, public, _ = served
    silent = socket.create_connection(("127.0.0.1", public))
    trickle = socket.create_connection(("127.0.0.1", public))
    trickle.sendall(b"POST /callbacks/plivo HTTP/1.1\r\nHost: x\r\n")
    for _ in range(3):  # keeps sending, never finishes its headers
        time.sleep(0.3)
        trickle.sendall(b"X-A: b\r\n")
    waited = _closed_within(silent, 5)
    assert waited is not None, "a connection that sent nothing was kept open"
    assert _closed_within(trickle, 5) is not None, "a connection trickling headers was kept open"
    silent.close()
    trickle.close()
    # A client that sends its request in time is served, and may reuse its connection.
    with httpx.Client(base_url=f"http://127.0.0.1:{public}") as client:
        assert client.get("/healthz").status_code == 200
        time.sleep(0.5)
        assert client.get("/healthz").status_code == 200


def test_connections_are_capped(served: tuple[Procs, int, int]) -> None:
    _, public, _ = served
    held = [socket.create_connection(("127.0.0.1", public)) for _ in range(4)]
    time.sleep(0.2)
    try:
        over = httpx.get(f"http://127.0.0.1:{public}/healthz", timeout=5)
        assert over.status_code == 503
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    assert httpx.get(f"http://127.0.0.1:{public}/healthz", timeout=5).status_code == 200


def test_the_public_port_serves_the_receiver_and_health_alone(served: tuple[Procs, int, int]) -> None:
    _, public, admin = served
    pub, adm = f"http://127.0.0.1:{public}", f"http://127.0.0.1:{admin}"
    for path in ("/v1/requests", "/v1/subscriptions", "/metrics", "/openapi.json", "/v1/deliveries"):
        hidden = httpx.get(pub + path, headers=AUTH)
        assert hidden.status_code == 404, (path, hidden.text)
        assert set(hidden.json()) == {"api_id", "error"}
    assert httpx.get(pub + "/healthz").status_code == 200
    assert httpx.get(pub + "/readyz").status_code == 200
    assert httpx.post(pub + "/callbacks/plivo", data={"api_id": "x"}).status_code == 403
    stored = httpx.post(pub + "/callbacks/plivo", **signed_callback(pub, {"api_id": "a1"}))
    assert stored.status_code == 200
    assert httpx.get(adm + "/v1/requests", headers=AUTH).status_code == 200
    assert httpx.get(adm + "/metrics").status_code == 200
    assert httpx.get(adm + "/healthz").status_code == 200


def test_a_trailing_slash_callback_url_is_served_not_redirected(served: tuple[Procs, int, int]) -> None:
    _, public, admin = served
    pub = f"http://127.0.0.1:{public}"
    unsigned = httpx.post(pub + "/callbacks/plivo/", data={"api_id": "x"}, headers={"Host": "evil.example"})
    assert unsigned.status_code == 403
    assert "location" not in unsigned.headers
    args = signed_callback(pub, {"api_id": "slash"})
    from gateway.domain.signing import sign_v3

    nonce = "9911"
    args["headers"]["X-Plivo-Signature-V3"] = sign_v3(
        "POST", pub + "/callbacks/plivo/", {"api_id": "slash"}, nonce, TOKEN
    )
    args["headers"]["X-Plivo-Signature-V3-Nonce"] = nonce
    assert httpx.post(pub + "/callbacks/plivo/", **args).status_code == 200
    # API paths with a slash added are not redirected either.
    slashed = httpx.get(f"http://127.0.0.1:{admin}/v1/requests/", headers={**AUTH, "Host": "evil.example"})
    assert slashed.status_code == 404
    assert "location" not in slashed.headers
