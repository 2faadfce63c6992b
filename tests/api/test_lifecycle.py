"""Request lifecycle: waiting for results, SSE, idempotent submits, the upstream rate limiter."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.support.receiver import wait_until

CALL = {"from": "14155550100", "to": "14155550123", "answer_url": "https://example.com/a"}


async def get_status(stack: Stack, api_id: str, **params: Any) -> httpx.Response:
    return await stack.client.get(
        f"{stack.gateway.url}/v1/requests/{api_id}", params=params, headers=stack.auth
    )


async def test_wait_returns_when_the_callback_arrives(stack: Stack) -> None:
    await stack.configure_sandbox(delay=0.5)
    api_id = (await stack.submit({"resource": "Call/", "params": CALL})).json()["api_id"]
    started = time.monotonic()
    response = await get_status(stack, api_id, wait=20)
    elapsed = time.monotonic() - started
    assert response.json()["status"] == "completed"
    assert elapsed < 20  # it came back with the result, not at the end of the wait


async def test_wait_ends_at_the_deadline_with_pending(stack: Stack) -> None:
    await stack.configure_sandbox(delay=60)
    api_id = (await stack.submit({"resource": "Call/", "params": CALL})).json()["api_id"]
    started = time.monotonic()
    response = await get_status(stack, api_id, wait=1)
    assert response.json()["status"] == "pending"
    assert time.monotonic() - started >= 1
    too_long = await get_status(stack, api_id, wait=61)
    assert too_long.status_code == 400
    assert "wait" in too_long.json()["error"]


async def test_two_hundred_waiters_share_one_connection(stack: Stack, redis: Redis) -> None:
    await stack.configure_sandbox(delay=60)
    api_id = (await stack.submit({"resource": "Call/", "params": CALL})).json()["api_id"]
    before = (await redis.info("clients"))["connected_clients"]
    limits = httpx.Limits(max_connections=250)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        url = f"{stack.gateway.url}/v1/requests/{api_id}"
        waiters = [
            asyncio.create_task(client.get(url, params={"wait": 20}, headers=stack.auth)) for _ in range(200)
        ]
        await asyncio.sleep(1.5)
        during = (await redis.info("clients"))["connected_clients"]
        assert not any(w.done() for w in waiters)
        # Deliver the callback now, by hand, as the sandbox would have.
        request = stack.sandbox_state.requests[-1]
        from tests.api.test_receiver import send, signed

        result = {"api_id": api_id, "message": "call fired", "request_uuid": "r-1"}
        query = request["params"]["callback_url"].split("?", 1)[1]
        assert (await send(stack, signed(stack, result, query=query))).status_code == 200
        answers = await asyncio.gather(*waiters)
    assert all(a.json()["status"] == "completed" for a in answers)
    assert during - before < 20, (before, during)


async def test_sse_stream_carries_every_event_of_the_request(stack: Stack) -> None:
    await stack.configure_sandbox(delay=0.3)
    body = {"resource": "Message/", "params": {"src": "1", "dst": "2", "text": "hi"}, "status_events": True}
    api_id = (await stack.submit(body)).json()["api_id"]
    frames: list[dict[str, Any]] = []
    url = f"{stack.gateway.url}/v1/requests/{api_id}/events"
    async with stack.client.stream("GET", url, params={"duration": 10}, headers=stack.auth) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
            if len(frames) == 4:
                break
    assert frames[0]["type"] == "request.completed"
    assert [f["type"] for f in frames[1:]] == ["message.status"] * 3
    # Resuming after the first event replays only what came after it.
    resumed: list[str] = []
    headers = {**stack.auth, "Last-Event-ID": frames[0]["id"]}
    async with stack.client.stream("GET", url, params={"duration": 1}, headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("id: "):
                resumed.append(line[4:])
    assert resumed == [f["id"] for f in frames[1:]]
    missing = await stack.client.get(f"{stack.gateway.url}/v1/requests/nope/events", headers=stack.auth)
    assert missing.status_code == 404


async def test_concurrent_idempotent_submits_on_two_instances_call_upstream_once(
    stack: Stack,
) -> None:
    other = stack.add_gateway()
    await stack.configure_sandbox(delay=60)
    body = {"resource": "Call/", "params": CALL, "metadata": {"n": 1}}
    headers = {**stack.auth, "Idempotency-Key": "order-42"}
    urls = [stack.gateway.url, other.url] * 5
    answers = await asyncio.gather(
        *(stack.client.post(u + "/v1/requests", json=body, headers=headers) for u in urls)
    )
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["api_id"] for a in answers}) == 1
    assert len(stack.sandbox_state.requests) == 1
    # Later retries get the same response; another body under the same key is refused.
    again = await stack.client.post(stack.gateway.url + "/v1/requests", json=body, headers=headers)
    assert again.json() == answers[0].json()
    assert again.headers["location"] == answers[0].headers["location"]
    changed = await stack.client.post(
        stack.gateway.url + "/v1/requests", json={**body, "metadata": {"n": 2}}, headers=headers
    )
    assert changed.status_code == 422
    assert "Idempotency-Key" in changed.json()["error"]
    assert len(stack.sandbox_state.requests) == 1


async def test_idempotency_remembers_final_refusals_but_not_transient_failures(stack: Stack) -> None:
    headers = {**stack.auth, "Idempotency-Key": "k-1"}
    url = stack.gateway.url + "/v1/requests"
    bad = {"resource": "Call/", "params": {"from": "1", "to": "2"}}
    first = await stack.client.post(url, json=bad, headers=headers)
    second = await stack.client.post(url, json=bad, headers=headers)
    assert first.status_code == second.status_code == 400
    assert second.json()["error"] == "answer_url parameter is missing"
    assert len(stack.sandbox_state.requests) == 1
    # Refused four times with 429 (Plivo did not act): nothing to remember, the retry goes ahead.
    # (A 5xx is an unknown outcome, remembered: tests/services/test_upstream_safety.py.)
    await stack.configure_sandbox(replies=[{"status": 429, "retry_after": 0}] * 4)
    headers = {**stack.auth, "Idempotency-Key": "k-2"}
    good = {"resource": "Call/", "params": CALL}
    failed = await stack.client.post(url, json=good, headers=headers)
    assert failed.status_code == 429
    retried = await stack.client.post(url, json=good, headers=headers)
    assert retried.status_code == 202


async def test_upstream_429_with_retry_after_then_success(stack: Stack) -> None:
    await stack.configure_sandbox(replies=[{"status": 429, "retry_after": 1}])
    response = await stack.submit({"resource": "Call/", "params": CALL})
    assert response.status_code == 202
    first, second = stack.sandbox_state.requests
    assert second["at"] - first["at"] >= 0.9  # Retry-After was honoured


async def test_async_mode_callback_url_receives_the_event(stack: Stack) -> None:
    body = {"resource": "Call/", "params": CALL, "callback_url": stack.hook_url("/mine")}
    api_id = (await stack.submit(body)).json()["api_id"]
    await wait_until(lambda: stack.receiver.on("/mine"))
    event = json.loads(stack.receiver.on("/mine")[0].body)
    assert event["api_id"] == api_id
    assert event["type"] == "request.completed"


async def test_async_mode_with_get_puts_the_signed_event_in_the_query(stack: Stack, redis: Redis) -> None:
    from standardwebhooks import Webhook

    from tests.support.servers import ServerThread

    got: list[httpx.Request] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got.append(
                httpx.Request(
                    scope["method"],
                    "http://x" + scope["path"] + "?" + scope["query_string"].decode(),
                    headers=[(k.decode(), v.decode()) for k, v in scope["headers"]],
                )
            )
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    server = ServerThread(app).start()
    try:
        body = {
            "resource": "Call/",
            "params": CALL,
            "callback_url": server.url + "/get",
            "callback_method": "GET",
        }
        api_id = (await stack.submit(body)).json()["api_id"]
        await wait_until(lambda: got)
    finally:
        server.stop()
    request = got[0]
    assert request.method == "GET"
    payload = request.url.params["event"]
    secret = await redis.get(stack.settings.GATEWAY_KEY_PREFIX + "webhook_secret")
    event = Webhook(secret).verify(payload, dict(request.headers))
    assert event["api_id"] == api_id


async def test_rate_limiter_holds_a_burst_across_two_instances(stack_factory: Any) -> None:
    limit, window = 250, 0.5
    stack = await stack_factory(
        worker=False, UPSTREAM_RATE_LIMIT=limit, UPSTREAM_RATE_WINDOW=window, UPSTREAM_RATE_MAX_WAIT=30
    )
    other = stack.add_gateway()
    await stack.configure_sandbox(delay=600)
    body = {"resource": "Call/", "params": CALL}
    sem = asyncio.Semaphore(100)
    limits = httpx.Limits(max_connections=120)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(i: int) -> int:
            url = (stack.gateway.url, other.url)[i % 2] + "/v1/requests"
            async with sem:
                return (await client.post(url, json=body, headers=stack.auth)).status_code

        codes = await asyncio.gather(*(one(i) for i in range(1000)))
    assert codes.count(202) == 1000
    arrivals = sorted(r["at"] for r in stack.sandbox_state.requests)
    assert len(arrivals) == 1000
    # In any window, at most `limit` arrivals: the (limit+1)-th after any arrival comes a full
    # window later (less a little for the time between a grant and the arrival).
    tightest = min(arrivals[i + limit] - arrivals[i] for i in range(len(arrivals) - limit))
    assert tightest >= window * 0.9, tightest


async def test_redis_failing_after_upstream_accepted_never_invites_a_resend(
    stack_factory: Any, tmp_path: Any
) -> None:
    """Plivo took the request, then Redis died: the answer is a 502 naming the api_id (not a 503
    that asks for a retry), and a retry with the same Idempotency-Key is not sent upstream."""
    from tests.support.servers import ServerThread
    from tooling.embedded_redis import EmbeddedRedis

    own = EmbeddedRedis(appendonly=True, appendfsync="always", directory=str(tmp_path)).start()
    calls: list[str] = []

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        calls.append(scope["path"])
        own.kill()  # Redis dies between Plivo's acceptance and the gateway's save
        body = json.dumps({"api_id": "accepted-1", "message": "async api spawned"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    plivo = ServerThread(upstream).start()
    try:
        stack = await stack_factory(
            worker=False,
            REDIS_URL=own.url,
            PLIVO_API_URL=plivo.url,
            UPSTREAM_READ_TIMEOUT=1,
            UPSTREAM_RETRY_BUDGET=1,
            UPSTREAM_RATE_MAX_WAIT=0,
            GATEWAY_API_RATE_LIMIT=0,
        )
        headers = {**stack.auth, "Idempotency-Key": "only-once"}
        url = stack.gateway.url + "/v1/requests"
        body = {"resource": "Call/", "params": CALL}
        first = await stack.client.post(url, json=body, headers=headers)
        assert first.status_code == 502, first.text
        assert "accepted-1" in first.json()["error"]
        own.start()  # back, with the claim (AOF, always) but without the request
        retry = await stack.client.post(url, json=body, headers=headers)
        assert retry.status_code == 429, retry.text  # still claimed: waits, then asks to come later
        assert calls == ["/v1/Account/" + stack.settings.PLIVO_AUTH_ID + "/Call/"]
    finally:
        plivo.stop()
        own.cleanup()
