"""HTTPS served by the gateway itself: a submit and a callback through TLS, TLS 1.2 at least,
and the https-only option for webhook targets."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api.app import create_app
from gateway.infra.tls import uvicorn_options
from gateway.settings import Settings
from tests.api.test_receiver import signed
from tests.conftest import Stack
from tests.support.servers import bound_socket
from tests.support.tls import TLSServerThread, self_signed

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


def client_context(cert: Path, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    if maximum is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = maximum
    return context


async def test_submit_and_callback_over_https(stack_factory: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sock = bound_socket()
    public = f"https://127.0.0.1:{sock.getsockname()[1]}"
    stack: Stack = await stack_factory(
        GATEWAY_PUBLIC_URL=public, GATEWAY_TLS_CERT_FILE=str(cert), GATEWAY_TLS_KEY_FILE=str(key)
    )
    settings: Settings = stack.settings
    server = TLSServerThread(create_app(settings), sock, uvicorn_options(settings)).start()
    try:
        assert server.url == public
        await stack.configure_sandbox(delay=60)  # the callback below is sent by hand, over TLS
        async with httpx.AsyncClient(verify=client_context(cert), timeout=30) as client:
            submit = await client.post(
                public + "/v1/requests", json={"resource": "Call/", "params": CALL}, headers=stack.auth
            )
            assert submit.status_code == 202, submit.text
            api_id = submit.json()["api_id"]
            callback_url = stack.sandbox_state.requests[-1]["params"]["callback_url"]
            assert callback_url.startswith(public + "/callbacks/plivo?")
            # Plivo signs the public https URL; the gateway checks exactly that one.
            result = {"api_id": api_id, "message": "call fired"}
            args = signed(stack, result, query=callback_url.split("?")[1])
            callback = await client.request(**{**args, "url": callback_url})  # through TLS
            assert callback.status_code == 200, callback.text
            status = await client.get(
                f"{public}/v1/requests/{api_id}", params={"wait": 10}, headers=stack.auth
            )
            assert status.json()["status"] == "completed"
            assert status.json()["result"]["message"] == "call fired"
    finally:
        server.stop()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_older_than_1_2_is_refused(stack_factory: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    stack: Stack = await stack_factory(
        worker=False, GATEWAY_TLS_CERT_FILE=str(cert), GATEWAY_TLS_KEY_FILE=str(key)
    )
    server = TLSServerThread(
        create_app(stack.settings), bound_socket(), uvicorn_options(stack.settings)
    ).start()
    try:
        assert server.server.config.ssl is not None
        assert server.server.config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
        async with httpx.AsyncClient(verify=client_context(cert, ssl.TLSVersion.TLSv1_2)) as client:
            assert (await client.get(server.url + "/healthz")).status_code == 200
        old = client_context(cert, ssl.TLSVersion.TLSv1_1)
        with pytest.raises((ssl.SSLError, OSError)):
            await asyncio.open_connection("127.0.0.1", server.port, ssl=old)
    finally:
        server.stop()


async def test_https_only_refuses_plain_http_webhook_targets(stack_factory: Any) -> None:
    stack: Stack = await stack_factory(worker=False, GATEWAY_WEBHOOK_HTTPS_ONLY=True)
    plain = {
        "resource": "Call/",
        "params": CALL,
        "targets": [{"type": "webhook", "url": "http://127.0.0.1:9/h"}],
    }
    refused = await stack.submit(plain)
    assert refused.status_code == 400 and "targets.0.url" in refused.json()["error"]
    assert "https" in refused.json()["error"]
    callback = await stack.submit(
        {"resource": "Call/", "params": CALL, "callback_url": "http://127.0.0.1:9/c"}
    )
    assert callback.status_code == 400 and "callback_url" in callback.json()["error"]
    sub = await stack.client.post(
        stack.gateway.url + "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/s", "event_types": ["*"]},
        headers=stack.auth,
    )
    assert sub.status_code == 400 and "https" in sub.json()["error"]
    secure = {**plain, "targets": [{"type": "webhook", "url": "https://127.0.0.1:9/h"}]}
    assert (await stack.submit(secure)).status_code == 202
    assert stack.sandbox_state.requests and len(stack.sandbox_state.requests) == 1  # refusals never went out


async def test_serve_refuses_half_a_tls_configuration(make_settings: Any, tmp_path: Path) -> None:
    from gateway.infra.tls import problem

    cert, key = self_signed(tmp_path)
    assert problem(make_settings()) is None
    assert problem(make_settings(GATEWAY_TLS_CERT_FILE=str(cert), GATEWAY_TLS_KEY_FILE=str(key))) is None
    assert "both" in str(problem(make_settings(GATEWAY_TLS_CERT_FILE=str(cert))))
    missing = make_settings(GATEWAY_TLS_CERT_FILE=str(tmp_path / "nope.pem"), GATEWAY_TLS_KEY_FILE=str(key))
    assert "no such file" in str(problem(missing))
