"""The client for Plivo's REST API ("upstream").

One shared ``httpx.AsyncClient`` per process (pooled keep-alive connections), Basic auth with the
account's AUTH ID and token, JSON bodies on POST and query strings on GET/DELETE. Any 4xx but 429
is Plivo's final word and is raised as ``UpstreamError`` with its status and ``error`` text.

What is retried (exponential backoff with full jitter, honouring ``Retry-After``, bounded both in
count and in total time) depends on whether a resend can do harm. Plivo has no idempotency key, so
a POST (a create: an SMS, a call) is resent only when Plivo provably did not act on it: a 429, or
a connection that was never established. Any other failure once the request may have left (a 5xx,
a read or write timeout, a reset, a reply without an ``api_id``) is ``OutcomeUnknown``: never
resent; the caller records the request as ``unknown`` and its callback may still complete it.
GET and DELETE change nothing twice: they are also retried on 502/503/504 and any transport error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.domain.errors import BadGateway, OutcomeUnknown, RateLimited, UpstreamError
from gateway.infra import keepalive
from gateway.settings import Settings

RETRYABLE = frozenset({429, 502, 503, 504})  # for GET and DELETE
# Raised before any byte of the request left: the server cannot have acted on it.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def upstream_http(settings: Settings) -> httpx.AsyncClient:
    """The process's pool of connections to Plivo (or UPSTREAM_PROXY)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.UPSTREAM_READ_TIMEOUT, connect=settings.UPSTREAM_CONNECT_TIMEOUT),
        proxy=settings.UPSTREAM_PROXY,
        limits=httpx.Limits(
            max_connections=100, max_keepalive_connections=20, keepalive_expiry=keepalive.IDLE_SECONDS
        ),
        follow_redirects=False,
    )


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status_code: int
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RetryBudget:
    attempts: int = 4
    total_seconds: float = 10.0
    base_delay: float = 0.2
    max_delay: float = 5.0


def retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: rare for APIs; fall back to our own backoff


def backoff_delay(attempt: int, budget: RetryBudget, retry_after: float | None) -> float:
    """Delay before retry number ``attempt`` (1-based): Retry-After if given, else full jitter."""
    if retry_after is not None:
        return min(retry_after, budget.max_delay * 4)
    cap = min(budget.max_delay, budget.base_delay * (2 ** (attempt - 1)))
    return random.uniform(cap / 2, cap)


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("error"):
        error = body["error"]
        return error if isinstance(error, str) else str(error)
    return f"upstream answered {response.status_code}"


class PlivoClient:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_url: str,
        auth_id: str,
        auth_token: str,
        budget: RetryBudget | None = None,
        limiter: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._limiter = limiter
        self._http = http
        self._root = f"{api_url}/v1/Account/{auth_id}/"
        self._auth = httpx.BasicAuth(auth_id, auth_token)
        self._budget = budget or RetryBudget()

    async def request(self, method: str, resource: str, params: dict[str, Any]) -> UpstreamReply:
        """Send once, and again only where a resend cannot act twice (see the module docstring)."""
        url = self._root + resource
        safe = method in ("GET", "DELETE")
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._send(method, url, params)
            except httpx.TransportError as exc:
                if not (safe or isinstance(exc, NOT_SENT)):
                    raise OutcomeUnknown(f"no answer from upstream ({type(exc).__name__})") from exc
                failure: Exception = exc
                retry_after = None
                status = 0
            else:
                status = response.status_code
                if status < 400:
                    return UpstreamReply(status, self._json(response, safe))
                failure = self._failure(response, safe)
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            delay = backoff_delay(attempt, self._budget, retry_after)
            elapsed = time.monotonic() - started
            if attempt >= self._budget.attempts or elapsed + delay > self._budget.total_seconds:
                raise self._give_up(status, failure, retry_after)
            await asyncio.sleep(delay)

    @staticmethod
    def _failure(response: httpx.Response, safe: bool) -> Exception:
        """The error of a non-2xx reply if it is worth retrying; raised at once otherwise."""
        status = response.status_code
        if status == 429 or (safe and status in RETRYABLE):
            return UpstreamError(status, _error_text(response))
        if status < 500:
            raise UpstreamError(status, _error_text(response))
        if safe:
            raise BadGateway(f"upstream failed with {status}: {_error_text(response)}")
        # A 5xx to a create may come after Plivo acted on it (a 500 mid-way, a 502/504 from a
        # proxy that timed out waiting for a Plivo that went on): never resent.
        raise OutcomeUnknown(f"upstream failed with {status}: {_error_text(response)}")

    async def _send(self, method: str, url: str, params: dict[str, Any]) -> httpx.Response:
        if self._limiter is not None:
            await self._limiter()  # every attempt counts against the account's rate limit
        if method == "POST":
            return await self._http.post(url, json=params, auth=self._auth)
        return await self._http.request(method, url, params=params, auth=self._auth)

    @staticmethod
    def _json(response: httpx.Response, safe: bool) -> dict[str, Any]:
        """The reply's JSON object. A 2xx we cannot read to a create means it was carried out,
        we cannot tell with which ``api_id``: an unknown outcome, not a failure to resend."""
        error = BadGateway if safe else OutcomeUnknown
        try:
            body = response.json()
        except ValueError as exc:
            raise error("upstream answered with a body that is not JSON") from exc
        if not isinstance(body, dict):
            raise error("upstream answered with JSON that is not an object")
        return body

    @staticmethod
    def _give_up(status: int, failure: Exception, retry_after: float | None) -> Exception:
        if status == 429:
            return RateLimited("upstream rate limit reached, retry later", retry_after=retry_after or 1.0)
        if status:
            return BadGateway(f"upstream failed with {status}: {failure}")
        return BadGateway(f"upstream unreachable: {type(failure).__name__}")
