"""Configuration: one typed class whose field names are the environment variable names.

Values come from the process environment first, then from a `.env` file in the working directory;
`NAME=` (empty) means unset. Each field carries its one-line description (docs/operations.md's
configuration reference is generated from them) and, where its default is empty, an example.

Everything is checked at construction, and every problem is reported in one `ValidationError`,
one error per variable: per-field rules, then cross-field rules written as validators of the later
field reading the earlier one from `info.data` (unlike a model validator, they still run when an
unrelated variable is invalid). `_explain` turns each error into a sentence that says what is
expected and gives an example `NAME=value`. `unknown_names` finds variables that look like
settings but are not (typos), which a model validator cannot see.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import importlib.util
import ipaddress
import os
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit

from dotenv import dotenv_values
from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.asyncio.connection import parse_url

SignatureVersion = Literal["v3", "v2"]
SIGNATURE_VERSIONS: tuple[SignatureVersion, ...] = ("v3", "v2")
DEFAULT_RETRY_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

PLACEHOLDER_KEYS = frozenset({"changeme", "change-me", "secret"})
KEY_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:{}-]{1,64}")
# Environment variables with these prefixes are ours: one that is not a setting is a typo.
OWN_PREFIXES = ("GATEWAY_", "PLIVO_", "WORKER_", "REDIS_", "UPSTREAM_")
# ... except these, read by other programs next to the gateway.
NOT_SETTINGS = frozenset(
    {
        "REDIS_PASSWORD",  # deploy/docker-compose.yml substitutes it into REDIS_URL
    }
)
# Never echoed in an error message: they may carry a password.
_NO_ECHO = frozenset({"REDIS_URL", "UPSTREAM_PROXY"})


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _conflict(message: str) -> PydanticCustomError:
    """A cross-field problem: reported as is (it names both variables), without an example."""
    return PydanticCustomError("settings_conflict", "{message}", {"message": message})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        # `NAME=` (as .env.example has it) means unset: the default applies.
        env_ignore_empty=True,
        # "inf" or "nan" would pass `gt=0` (inf) or make every comparison false (nan).
        allow_inf_nan=False,
    )

    # --- state -------------------------------------------------------------------------------
    REDIS_URL: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The Redis that holds all state (`redis://`, `rediss://` for TLS, or `unix://`). "
        "`serve` and `worker` use the default when it is unset; `dev` starts an embedded Redis "
        "unless it is set.",
    )
    GATEWAY_KEY_PREFIX: str = Field(
        default="cg:",
        description="Prefix of every Redis key and of the arq queue's name, so that several gateways can "
        "share one Redis (1-64 letters, digits or `_ - . : { }`).",
    )
    REDIS_SENTINELS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated `host:port` of Redis Sentinels. When set, the master is looked up "
        "under REDIS_SENTINEL_MASTER and REDIS_URL only supplies the database, user and password.",
        examples=["sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"],
    )
    REDIS_SENTINEL_MASTER: str = Field(
        default="mymaster",
        description="Name of the master the sentinels monitor (used only with REDIS_SENTINELS).",
    )
    REDIS_WAIT_REPLICAS: int = Field(
        default=0,
        ge=0,
        description="Replicas that must acknowledge a stored callback (Redis `WAIT`) before the receiver "
        "answers 200; if they do not in time it answers 503 and Plivo retries. 0: do not wait.",
    )
    REDIS_WAIT_TIMEOUT: float = Field(
        default=1.0,
        gt=0,
        description="Seconds the receiver waits for those acknowledgements (with REDIS_WAIT_REPLICAS > 0).",
    )

    # --- upstream (Plivo) --------------------------------------------------------------------
    PLIVO_AUTH_ID: str = Field(
        default="",
        description="Plivo Auth ID, the user of upstream requests' HTTP Basic auth (`dev` uses the "
        "sandbox's).",
        examples=["MAXXXXXXXXXXXXXXXXXX"],
    )
    PLIVO_AUTH_TOKEN: SecretStr = Field(
        default=SecretStr(""),
        description="Plivo Auth Token: authenticates upstream requests and verifies callback signatures. "
        "`serve` refuses to start without it (unless GATEWAY_VERIFY_SIGNATURES=false).",
        examples=["your-plivo-auth-token"],
    )
    PLIVO_MAIN_AUTH_TOKEN: SecretStr = Field(
        default=SecretStr(""),
        description="The main account's Auth Token when PLIVO_AUTH_ID is a subaccount: verifies the "
        "`X-Plivo-Signature-Ma-*` headers.",
        examples=["main-account-auth-token"],
    )
    PLIVO_API_URL: str = Field(
        default="https://api.plivo.com",
        description="Upstream base URL; in development, the URL of `callback-gateway sandbox`.",
    )
    UPSTREAM_CONNECT_TIMEOUT: float = Field(
        default=5.0, gt=0, description="Seconds to establish a connection to Plivo."
    )
    UPSTREAM_READ_TIMEOUT: float = Field(
        default=30.0,
        gt=0,
        description="Seconds to wait for Plivo's answer (also for sending a request and for a free "
        "connection).",
    )
    UPSTREAM_PROXY: str | None = Field(
        default=None,
        description="Proxy for calls to Plivo (`http://`, `https://`; `socks5://` needs "
        "`httpx[socks]`). Unset: direct.",
        examples=["http://proxy.internal:3128"],
    )
    UPSTREAM_MAX_ATTEMPTS: int = Field(
        default=4,
        ge=1,
        description="Attempts per upstream call, with backoff and jitter honouring `Retry-After`; a "
        "create (POST) is resent only after a 429 or a connection never established.",
    )
    UPSTREAM_RETRY_BUDGET: float = Field(
        default=10.0, gt=0, description="Seconds all attempts of one upstream call may take together."
    )
    UPSTREAM_RATE_LIMIT: int = Field(
        default=300,
        ge=0,
        description="Requests to Plivo per UPSTREAM_RATE_WINDOW, shared by every gateway process through "
        "Redis (Plivo's default account limit is 300 per 5 s). 0: no limiter.",
    )
    UPSTREAM_RATE_WINDOW: float = Field(
        default=5.0, gt=0, description="The window of UPSTREAM_RATE_LIMIT, in seconds."
    )
    UPSTREAM_RATE_MAX_WAIT: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a submit over UPSTREAM_RATE_LIMIT waits for a slot before it gets 429.",
    )

    # --- the gateway's own surface -----------------------------------------------------------
    GATEWAY_PUBLIC_URL: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL at which Plivo reaches this gateway: `callback_url` is built from it and "
        "signatures are checked against it (never against the Host header).",
    )
    GATEWAY_API_KEYS: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated bearer keys for the `/v1/` API (admin keys). `serve` refuses to "
        "start without one; `dev` generates one.",
        examples=["cgk_9Xq2LrTz0bWvYk4NmP7sJd1aHc6EfGuR"],
    )
    GATEWAY_VERIFY_SIGNATURES: bool = Field(
        default=True,
        description="Verify Plivo signatures on callbacks. Switch off only to debug (a warning is logged).",
    )
    GATEWAY_SIGNATURE_VERSIONS: Annotated[list[SignatureVersion], NoDecode] = Field(
        default_factory=lambda: list(SIGNATURE_VERSIONS),
        min_length=1,
        description="Plivo signature versions the receiver accepts, comma-separated (`v3`, `v2`); V3 "
        "decides when a callback carries both. Messaging and Verify callbacks are V2-signed.",
    )
    GATEWAY_ADMIN_PORT: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="A second port for the API, `/docs`, `/console/` and `/metrics` (keep it internal); "
        "the public port then serves `/callbacks/plivo` and health alone. Unset: one listener.",
        examples=["8081"],
    )
    GATEWAY_METRICS_TOKEN: SecretStr | None = Field(
        default=None,
        description="When set, the API's `/metrics` requires `Authorization: Bearer <token>`. Unset: open.",
        examples=["a-long-random-scrape-token"],
    )
    GATEWAY_HEADER_TIMEOUT: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request's headers before `serve` closes the "
        "connection (slowloris guard).",
    )
    GATEWAY_MAX_CONNECTIONS: int = Field(
        default=2048,
        gt=0,
        description="Most connections (and requests in flight) one server process holds; past it new "
        "requests get 503.",
    )
    GATEWAY_MAX_BODY_BYTES: int = Field(
        default=256 * 1024,
        gt=0,
        description="Largest request body accepted (API and receiver), in bytes; larger ones get 413.",
    )
    GATEWAY_BODY_READ_TIMEOUT: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request body; slower ones get 408.",
    )
    GATEWAY_DEFAULT_TIMEOUT: int = Field(
        default=3600,
        gt=0,
        description="Seconds a request waits for its callback when the submit gives no `timeout` (at "
        "most GATEWAY_MAX_TIMEOUT).",
    )
    GATEWAY_MAX_TIMEOUT: int = Field(
        default=7 * 86400,
        gt=0,
        validate_default=True,  # the cross-field rule runs when only GATEWAY_DEFAULT_TIMEOUT is set
        description="Largest `timeout` a submit may ask for, in seconds (a larger one gets 400).",
    )
    GATEWAY_IDEMPOTENCY_TTL: int = Field(
        default=86400,
        gt=0,
        description="Seconds an `Idempotency-Key` is remembered (a retried submit gets the first response).",
    )
    GATEWAY_API_RATE_LIMIT: int = Field(
        default=600,
        ge=0,
        description="Requests per GATEWAY_API_RATE_WINDOW each API key may make to the `/v1/` API, "
        "counted in Redis across processes (then 429); the receiver is never counted. 0: no limit.",
    )
    GATEWAY_API_RATE_WINDOW: float = Field(
        default=5.0, gt=0, description="The window of GATEWAY_API_RATE_LIMIT, in seconds."
    )
    GATEWAY_TLS_CERT_FILE: str = Field(
        default="",
        description="PEM certificate (chain): with GATEWAY_TLS_KEY_FILE, `serve` speaks HTTPS itself "
        "(TLS 1.2 or newer). Unset behind a TLS-terminating proxy (docs/https.md).",
        examples=["/etc/callback-gateway/infra/tls/cert.pem"],
    )
    GATEWAY_TLS_KEY_FILE: str = Field(
        default="",
        description="PEM private key of GATEWAY_TLS_CERT_FILE.",
        examples=["/etc/callback-gateway/infra/tls/key.pem"],
    )

    # --- drop-in proxy (/v1/Account/{auth_id}/...) ---------------------------------------------
    GATEWAY_PROXY_TOKEN_SECRET: SecretStr = Field(
        default=SecretStr(""),
        description="Secret from which the drop-in proxy's tokens (`POST /v1/proxy_tokens`) are derived "
        "and relayed callbacks re-signed; only token hashes are stored. Unset: no tokens issued.",
        examples=["a-long-random-secret-of-32-characters-or-more"],
    )
    GATEWAY_PROXY_PASSTHROUGH: bool = Field(
        default=False,
        description="Also accept the real PLIVO_AUTH_TOKEN as the Basic-auth password on the drop-in "
        "proxy (relayed callbacks are then signed with it).",
    )

    # --- receiver and correlation ------------------------------------------------------------
    GATEWAY_UNMATCHED_GRACE: int = Field(
        default=300,
        ge=0,
        description="Seconds a callback with no matching request waits before it becomes "
        "`callback.unmatched`.",
    )
    GATEWAY_DEDUP_TTL: int = Field(
        default=86400,
        gt=0,
        description="Seconds a callback's identity is remembered to drop duplicates (Plivo retries for "
        "minutes).",
    )
    GATEWAY_NONCE_WINDOW: int = Field(
        default=86400,
        ge=0,
        description="Seconds a signature nonce is remembered: a stored callback presented again with the "
        "same nonce gets 403. 0: no check.",
    )

    # --- delivery ----------------------------------------------------------------------------
    GATEWAY_WEBHOOK_SECRET: SecretStr | None = Field(
        default=None,
        description="`whsec_...` secret that signs deliveries to per-request webhook targets (the "
        "`default` tenant's). Unset: generated and stored in Redis on first start.",
        examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    )
    GATEWAY_ALLOW_PRIVATE_WEBHOOKS: bool = Field(
        default=False,
        description="Allow webhook targets on loopback and private addresses (SSRF guard off; `dev` "
        "turns it on). Keep false in production.",
    )
    GATEWAY_WEBHOOK_HTTPS_ONLY: bool = Field(
        default=False,
        description="Refuse plain-http webhook targets (per-request targets, `callback_url`, subscriptions).",
    )
    GATEWAY_RETRY_SCHEDULE: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE),
        description="Comma-separated delays in seconds before each delivery attempt; after the last "
        "attempt fails the delivery is dead-lettered.",
    )
    GATEWAY_DELIVERY_TIMEOUT: float = Field(
        default=10.0, gt=0, description="Seconds one webhook attempt may take."
    )
    GATEWAY_OVERLOAD_FLOOR: float = Field(
        default=60.0,
        ge=0,
        description="Least delay in seconds before the next attempt after a timeout or a 429 from a "
        "webhook endpoint.",
    )
    GATEWAY_MAX_RESPONSE_BYTES: int = Field(
        default=4096,
        gt=0,
        description="Bytes of a webhook endpoint's answer that are read (and kept in the delivery log).",
    )
    GATEWAY_RETENTION: int = Field(
        default=30 * 86400,
        gt=0,
        description="Seconds events, delivery logs and finished requests are kept.",
    )
    GATEWAY_WEBHOOK_ALLOW_CIDRS: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs that webhook targets may resolve to although the SSRF guard "
        "refuses non-public addresses (e.g. an internal service).",
        examples=["10.20.0.0/16,fd00:20::/48"],
    )
    GATEWAY_SECRET_ROTATION_GRACE: float = Field(
        default=86400.0,
        ge=0,
        description="Seconds a subscription's previous secret keeps signing, next to the new one, after "
        "a rotation.",
    )
    GATEWAY_BREAKER_WINDOW: float = Field(
        default=60.0,
        gt=0,
        description="Seconds over which each subscription's circuit breaker counts attempts and failures.",
    )
    GATEWAY_BREAKER_MIN_REQUESTS: int = Field(
        default=10,
        gt=0,
        description="Attempts within GATEWAY_BREAKER_WINDOW before the breaker may open.",
    )
    GATEWAY_BREAKER_FAILURE_RATE: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of failed attempts within the window (above 0, at most 1) at or above which "
        "the breaker opens.",
    )
    GATEWAY_BREAKER_COOLDOWN: float = Field(
        default=30.0,
        gt=0,
        description="Seconds an open breaker waits before it lets one probe attempt through (half-open); "
        "a success closes it.",
    )
    GATEWAY_DISABLE_AFTER: float = Field(
        default=5 * 86400.0,
        gt=0,
        description="Seconds a subscription may keep failing (no success in between) before it is "
        "disabled, with a `subscription.disabled` operator event.",
    )
    GATEWAY_SUBSCRIPTION_RATE: float = Field(
        default=50.0,
        gt=0,
        description="Deliveries per second to one subscription (a token bucket in Redis, shared by all "
        "workers).",
    )
    GATEWAY_SUBSCRIPTION_BURST: int = Field(
        default=100, gt=0, description="Burst size of that token bucket, in deliveries."
    )
    GATEWAY_SUBSCRIPTION_CONCURRENCY: int = Field(
        default=10,
        gt=0,
        description="Deliveries to one subscription in flight at once, across all workers.",
    )
    GATEWAY_BULK_REPLAY_MAX: int = Field(
        default=500,
        gt=0,
        description="Most failed deliveries one bulk replay call re-queues; call again for the rest.",
    )

    # --- worker ------------------------------------------------------------------------------
    WORKER_CONCURRENCY: int = Field(
        default=64,
        gt=0,
        description="Deliveries (and webhook connections) one worker process runs at once.",
    )
    WORKER_POLL_DELAY: float = Field(
        default=0.05,
        gt=0,
        description="Seconds between arq polls for scheduled work (retries); callbacks are not polled.",
    )
    WORKER_CLAIM_IDLE: float = Field(
        default=30.0,
        gt=0,
        description="Seconds before a callback left unfinished by a dead worker is taken over by another.",
    )
    WORKER_SWEEP_INTERVAL: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between sweeps for timed-out requests and unmatched callbacks.",
    )

    # --- operations (health, metrics, shutdown; docs/operations.md) ---------------------------
    GATEWAY_READY_REQUIRES_WORKER: bool = Field(
        default=True,
        description="`/readyz` also requires a fresh worker heartbeat (the trade-off is under Health "
        "in docs/operations.md).",
    )
    GATEWAY_ACCESS_LOG: bool = Field(
        default=True,
        description="One log line per `/v1/` API request (method, path, status, duration).",
    )
    WORKER_HEARTBEAT_INTERVAL: float = Field(
        default=5.0, gt=0, description="Seconds between a worker's heartbeats."
    )
    WORKER_HEARTBEAT_TTL: float = Field(
        default=15.0,
        gt=0,
        validate_default=True,  # the cross-field rule runs when only the interval is set
        description="Seconds after its last heartbeat a worker counts as gone (more than "
        "WORKER_HEARTBEAT_INTERVAL).",
    )
    WORKER_METRICS_PORT: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port on which each worker process serves its own Prometheus `/metrics` (the "
        "delivery metrics are there, not on the API). 0: off.",
    )
    WORKER_SHUTDOWN_GRACE: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a worker given SIGTERM lets work in flight finish before cancelling it (it "
        "is then retried by another worker).",
    )
    GATEWAY_TRACE_PROPAGATION: bool = Field(
        default=False,
        description="Carry W3C `traceparent` from a submit into its request, its events and every "
        "webhook attempt (one HGET per correlated callback).",
    )
    GATEWAY_OTEL_ENABLED: bool = Field(
        default=False,
        description="With GATEWAY_TRACE_PROPAGATION=true and the `otel` extra installed: real "
        "OpenTelemetry spans, exported over OTLP unless a tracer provider is configured.",
    )

    # --- logging -----------------------------------------------------------------------------
    LOG_FORMAT: Literal["json", "console"] = Field(
        default="json",
        description="`json` (one object per line; production) or `console` (readable; `dev`'s default).",
    )
    LOG_LEVEL: LogLevel = Field(
        default="INFO",
        description="Least severe level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).",
    )

    # --- parsing -----------------------------------------------------------------------------
    @field_validator(
        "GATEWAY_API_KEYS",
        "REDIS_SENTINELS",
        "GATEWAY_RETRY_SCHEDULE",
        "GATEWAY_WEBHOOK_ALLOW_CIDRS",
        mode="before",
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("GATEWAY_SIGNATURE_VERSIONS", mode="before")
    @classmethod
    def _versions_csv(cls, value: object) -> object:
        value = _split_csv(value)
        return [v.lower() for v in value] if isinstance(value, list) else value

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _level_upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("LOG_FORMAT", mode="before")
    @classmethod
    def _format_lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    # --- one field ---------------------------------------------------------------------------
    @field_validator("REDIS_URL")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// (TLS) or unix:// URL")
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("a unix:// URL needs the socket's path, as in unix:///run/redis.sock")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("needs a host, as in redis://HOST:6379/0")
        db = parse_qs(parts.query).get("db", [parts.path.lstrip("/") if parts.scheme != "unix" else ""])
        if db[0] and not db[0].isdigit():
            raise ValueError("the database (after the last /) must be a number, as in redis://HOST:6379/0")
        try:
            parse_url(value)  # what the clients will do with it: the port, the query options
        except ValueError as exc:
            raise ValueError(f"does not parse: {exc}") from None
        return value

    @field_validator("GATEWAY_KEY_PREFIX")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if not KEY_PREFIX_PATTERN.fullmatch(value):
            raise ValueError("must be 1-64 letters, digits or _ - . : { }, as it starts every Redis key")
        return value

    @field_validator("REDIS_SENTINEL_MASTER")
    @classmethod
    def _master_name(cls, value: str) -> str:
        if not value or any(char.isspace() for char in value):
            raise ValueError("must be the master's name as the sentinels know it, without spaces")
        return value

    @field_validator("PLIVO_AUTH_ID")
    @classmethod
    def _auth_id(cls, value: str) -> str:
        if value and not (value.isascii() and value.isalnum()):
            raise ValueError("must be letters and digits only: the Auth ID shown in the Plivo console")
        return value

    @field_validator("REDIS_SENTINELS")
    @classmethod
    def _sentinels_valid(cls, value: list[str]) -> list[str]:
        for hostport in value:
            host, sep, port = hostport.rpartition(":")
            if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{hostport!r} is not host:port (port 1-65535)")
        return value

    @field_validator("GATEWAY_WEBHOOK_ALLOW_CIDRS")
    @classmethod
    def _cidrs_valid(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IPv4 or IPv6 network (address/prefix)") from None
        return value

    @field_validator("GATEWAY_RETRY_SCHEDULE")
    @classmethod
    def _schedule_valid(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("needs at least one delay, none negative")
        return value

    @field_validator("GATEWAY_PUBLIC_URL", "PLIVO_API_URL")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number in 0-65535
        except ValueError:
            raise ValueError("has a port that is not a number in 1-65535") from None
        if parts.fragment:
            raise ValueError("must be a base URL, without #fragment (a fragment is never sent)")
        # The API paths are appended to PLIVO_API_URL. GATEWAY_PUBLIC_URL keeps a query, which
        # the receiver's signature check is written (and tested) to handle.
        if parts.query and info.field_name == "PLIVO_API_URL":
            raise ValueError("must be a base URL, without ?query")
        return value.rstrip("/")

    @field_validator("UPSTREAM_PROXY")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https", "socks5", "socks5h") or not parts.hostname:
            raise ValueError("must be an http://, https:// or socks5:// URL with a host")
        if parts.scheme.startswith("socks") and importlib.util.find_spec("socksio") is None:
            raise ValueError("a socks5:// proxy needs the socks extra: pip install 'httpx[socks]'")
        return value

    @field_validator("GATEWAY_API_KEYS")
    @classmethod
    def _keys_valid(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            raw = key.get_secret_value()
            if raw in PLACEHOLDER_KEYS:
                raise ValueError("holds a placeholder key: generate a real one")
            if not raw.isascii() or not raw.isprintable() or " " in raw:
                raise ValueError("a key must be printable ASCII without spaces (it is sent in a header)")
        return value

    @field_validator("GATEWAY_WEBHOOK_SECRET")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            raw = value.get_secret_value()
            try:
                decoded = base64.b64decode(raw.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                decoded = b""
            # Checked here, at start: a secret that does not decode would fail every delivery.
            if not raw.startswith("whsec_") or len(decoded) < 24:
                raise ValueError("must look like whsec_<base64 of at least 24 random bytes>")
            return value
        return None

    # --- cross-field: the later field checks the earlier one ----------------------------------
    @field_validator("GATEWAY_MAX_TIMEOUT")
    @classmethod
    def _max_timeout_covers_default(cls, value: int, info: ValidationInfo) -> int:
        default = info.data.get("GATEWAY_DEFAULT_TIMEOUT")
        if default is not None and default > value:
            raise _conflict(
                f"GATEWAY_DEFAULT_TIMEOUT ({default}) is above GATEWAY_MAX_TIMEOUT ({value}): "
                "lower the default or raise the maximum"
            )
        return value

    @field_validator("WORKER_HEARTBEAT_TTL")
    @classmethod
    def _ttl_exceeds_interval(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("WORKER_HEARTBEAT_INTERVAL")
        if interval is not None and value <= interval:
            raise _conflict(
                f"WORKER_HEARTBEAT_TTL ({value:g}) must be above WORKER_HEARTBEAT_INTERVAL ({interval:g}), "
                "or a live worker counts as gone between two heartbeats (e.g. 3 x the interval)"
            )
        return value

    @field_validator("WORKER_METRICS_PORT")
    @classmethod
    def _metrics_port_is_not_the_admin_port(cls, value: int, info: ValidationInfo) -> int:
        admin = info.data.get("GATEWAY_ADMIN_PORT")
        if value and value == admin:
            raise _conflict(
                f"WORKER_METRICS_PORT and GATEWAY_ADMIN_PORT are both {value}: on one machine the "
                "second process to start could not bind it; choose two ports"
            )
        return value

    # --- every field: say what was expected, with an example --------------------------------
    @field_validator("*", mode="wrap")
    @classmethod
    def _explain(cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        """Defined last, so it wraps the validators above too."""
        try:
            return handler(value)
        except ValidationError as exc:
            name = info.field_name or ""
            raise PydanticCustomError(
                "invalid_setting", "{problem}", {"problem": explain(name, value, exc)}
            ) from None

    @cached_property
    def api_keys(self) -> frozenset[str]:
        return frozenset(key.get_secret_value() for key in self.GATEWAY_API_KEYS)

    @property
    def callback_url(self) -> str:
        return f"{self.GATEWAY_PUBLIC_URL}/callbacks/plivo"


def explain(name: str, value: object, exc: ValidationError) -> str:
    """One sentence for the problems of one setting: what is wrong, what was given, an example."""
    errors = exc.errors(include_url=False)
    if len(errors) == 1 and errors[0]["type"] == "settings_conflict":
        return str(errors[0]["msg"])
    problems = []
    for error in errors:
        msg = str(error["ctx"]["error"]) if error["type"] == "value_error" else str(error["msg"])
        msg = msg.removeprefix("Input ")
        where = [str(part) for part in error["loc"] if isinstance(part, int)]
        problems.append(f"item {int(where[0]) + 1}: {msg}" if where else msg)
    text = "; ".join(problems)
    field = Settings.model_fields.get(name)
    secret = field is not None and "SecretStr" in str(field.annotation)
    if isinstance(value, str) and not secret and name not in _NO_ECHO:
        text += f" (got {value!r})"
    return f"{text}; for example {name}={example(name)}"


def env_text(value: object) -> str:
    """A value as it is written in the environment or .env (a secret or None as empty)."""
    if value is None or isinstance(value, SecretStr):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, list | tuple):
        return ",".join(env_text(item) for item in value)
    return str(value)


def default_text(name: str) -> str:
    """The default of a setting as `NAME=` would spell it in .env ("" when it has none)."""
    return env_text(Settings.model_fields[name].get_default(call_default_factory=True))


def example(name: str) -> str:
    """A valid value of a setting: its documented example, else its default."""
    examples = Settings.model_fields[name].examples
    return str(examples[0]) if examples else default_text(name)


def unknown_names(
    environ: Mapping[str, str] | None = None, dotenv: Mapping[str, str | None] | None = None
) -> list[str]:
    """Variables that look like settings but are none (typos such as GATEWAY_API_KEY), sorted.

    `environ` defaults to the process environment, `dotenv` to the `.env` file Settings reads
    (pass `{}` for none). In the environment, names with one of our prefixes count, and a
    setting's name in another case (settings are case-sensitive: `log_level` is not read). In the
    `.env` file every name counts: the gateway reads nothing else from it."""
    if environ is None:
        environ = os.environ
    if dotenv is None:
        env_file = Path(str(Settings.model_config.get("env_file")))
        dotenv = dotenv_values(env_file) if env_file.is_file() else {}
    known = Settings.model_fields.keys()

    def ours(name: str) -> bool:
        return name.upper().startswith(OWN_PREFIXES) or name.upper() in known

    candidates = {name for name in environ if ours(name)} | set(dotenv)
    return sorted(name for name in candidates if name not in known and name not in NOT_SETTINGS)


def closest_setting(name: str) -> str | None:
    """The setting an unknown name probably meant, for a "did you mean" hint."""
    if name.upper() in Settings.model_fields:
        return name.upper()
    close = difflib.get_close_matches(name.upper(), list(Settings.model_fields), n=1, cutoff=0.8)
    return close[0] if close else None
